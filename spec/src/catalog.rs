//! The 27 documented responses of the Backups API, as data.
//!
//! Each Chinese body is the spec's code block word for word; each English body is the same
//! block from the English edition of the document. Tests hold the server's responses,
//! messages and OpenAPI document to these texts.

use serde_json::Value;

/// The language of a text: the spec's Chinese, or the English edition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    /// The documented message texts in this language.
    pub const fn messages(self) -> &'static Messages {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }
}

/// The six operations of the Backups API, in the spec's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    List,
    Create,
    Upload,
    Delete,
    Restore,
    Download,
}

/// The HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// What a documented body is: JSON text, the JSON `null` shown for 204, or the
/// placeholder text the spec shows for the file stream of a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    NoContent,
    FileStream,
}

/// Summary (the section heading), description (the paragraphs under it) and the
/// warning box, if the section has one, of one operation in one language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationDoc {
    pub summary: &'static str,
    pub description: &'static str,
    pub warning: Option<&'static str>,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::List,
        Operation::Create,
        Operation::Upload,
        Operation::Delete,
        Operation::Restore,
        Operation::Download,
    ];

    pub const fn method(self) -> Method {
        match self {
            Operation::List | Operation::Download => Method::Get,
            Operation::Create | Operation::Upload | Operation::Restore => Method::Post,
            Operation::Delete => Method::Delete,
        }
    }

    /// The path template, with `{key}` where the backup key goes.
    pub const fn path(self) -> &'static str {
        match self {
            Operation::List | Operation::Create => "/api/backups",
            Operation::Upload => "/api/backups/upload",
            Operation::Delete | Operation::Download => "/api/backups/{key}",
            Operation::Restore => "/api/backups/{key}/restore",
        }
    }

    pub fn doc(self, lang: Lang) -> &'static OperationDoc {
        let index = self as usize;
        match lang {
            Lang::Zh => &ZH_DOCS[index],
            Lang::En => &EN_DOCS[index],
        }
    }
}

/// Title of the spec document.
pub const fn api_title(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "备份 API",
        Lang::En => "Backups API",
    }
}

// Indexed by `Operation as usize`.
static ZH_DOCS: [OperationDoc; 6] = [
    OperationDoc {
        summary: "列出备份",
        description: "返回所有可用备份文件的列表。\n\n只有超级用户可以执行此操作。",
        warning: None,
    },
    OperationDoc {
        summary: "创建备份",
        description: "创建新的备份。\n\n只有超级用户可以执行此操作。",
        warning: None,
    },
    OperationDoc {
        summary: "上传备份",
        description: "上传备份文件。\n\n只有超级用户可以执行此操作。",
        warning: None,
    },
    OperationDoc {
        summary: "删除备份",
        description: "根据键值删除单个备份文件。\n\n只有超级用户可以执行此操作。",
        warning: Some("如果备份当前正在创建或恢复中，删除操作将失败。"),
    },
    OperationDoc {
        summary: "恢复备份",
        description: "从备份文件恢复应用。\n\n这将重启当前运行的 PocketBase 进程。\n\n只有超级用户可以执行此操作。",
        warning: Some(
            "- 备份和恢复操作不能同时运行。\n- 此操作将重启服务器。\n- 所有当前数据将被备份数据替换。",
        ),
    },
    OperationDoc {
        summary: "下载备份",
        description: "下载单个备份文件。\n\n只有超级用户可以执行此操作。",
        warning: None,
    },
];

static EN_DOCS: [OperationDoc; 6] = [
    OperationDoc {
        summary: "List backups",
        description: "Returns list with all available backup files.\n\nOnly superusers can perform this action.",
        warning: None,
    },
    OperationDoc {
        summary: "Create backup",
        description: "Creates a new backup.\n\nOnly superusers can perform this action.",
        warning: None,
    },
    OperationDoc {
        summary: "Upload backup",
        description: "Uploads a backup file.\n\nOnly superusers can perform this action.",
        warning: None,
    },
    OperationDoc {
        summary: "Delete backup",
        description: "Deletes a single backup file by its key.\n\nOnly superusers can perform this action.",
        warning: Some("If the backup is currently being created or restored, the delete operation will fail."),
    },
    OperationDoc {
        summary: "Restore backup",
        description: "Restores the application from a backup file.\n\nThis will restart the currently running PocketBase process.\n\nOnly superusers can perform this action.",
        warning: Some(
            "- Backup and restore operations cannot run concurrently.\n- This operation will restart the server.\n- All current data will be replaced with the backup data.",
        ),
    },
    OperationDoc {
        summary: "Download backup",
        description: "Downloads a single backup file.\n\nOnly superusers can perform this action.",
        warning: None,
    },
];

/// The documented message texts of one language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Messages {
    /// 401 on every operation.
    pub unauthorized: &'static str,
    /// 403 on every operation.
    pub forbidden: &'static str,
    /// 404 on delete, restore and download.
    pub not_found: &'static str,
    /// 400 on create while another create or restore runs.
    pub busy_create: &'static str,
    /// 400 on delete and restore while a create or restore is in the way. In Chinese it
    /// differs from `busy_create` (已在运行 vs 已经启动); in English it is the same text.
    pub busy_delete_restore: &'static str,
    /// 400 on list and download when the backups storage cannot be opened.
    pub storage_failure: &'static str,
    /// 400 on upload: the top-level message.
    pub upload_failure: &'static str,
    /// 400 on upload: `data.file.message` for a file that is not a zip archive.
    pub upload_not_zip: &'static str,
}

/// `data.file.code` of the documented upload 400.
pub const UPLOAD_NOT_ZIP_CODE: &str = "validation_invalid_mime_type";

pub const ZH: Messages = Messages {
    unauthorized: "请求需要有效的记录授权令牌。",
    forbidden: "只有超级用户可以执行此操作。",
    not_found: "请求的资源未找到。",
    busy_create: "请稍后重试 - 另一个备份/恢复进程已经启动。",
    busy_delete_restore: "请稍后重试 - 另一个备份/恢复进程已在运行。",
    storage_failure: "加载备份文件系统失败。",
    upload_failure: "上传备份失败。",
    upload_not_zip: "文件必须是 zip 压缩包。",
};

pub const EN: Messages = Messages {
    unauthorized: "The request requires valid record authorization token.",
    forbidden: "Only superusers can perform this action.",
    not_found: "The requested resource wasn't found.",
    busy_create: "Try again later - another backup/restore process has already been started.",
    busy_delete_restore:
        "Try again later - another backup/restore process has already been started.",
    storage_failure: "Failed to load backups filesystem.",
    upload_failure: "Failed to upload the backup.",
    upload_not_zip: "The file must be a zip archive.",
};

/// One documented response: the operation, its status, and the body as shown in
/// each edition of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocumentedResponse {
    pub operation: Operation,
    pub status: u16,
    pub kind: BodyKind,
    /// The spec's code block, verbatim.
    pub zh: &'static str,
    /// The English edition's code block, verbatim.
    pub en: &'static str,
}

impl DocumentedResponse {
    pub const fn method(&self) -> Method {
        self.operation.method()
    }

    pub const fn path(&self) -> &'static str {
        self.operation.path()
    }

    /// The documented text in `lang`, verbatim.
    pub const fn text(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::Zh => self.zh,
            Lang::En => self.en,
        }
    }

    /// The documented body as JSON (`Value::Null` for a 204); `None` for the file
    /// stream of a download, which is not JSON.
    pub fn body(&self, lang: Lang) -> Option<Value> {
        match self.kind {
            BodyKind::FileStream => None,
            // The texts are fixed and every one is parsed by a unit test.
            BodyKind::Json | BodyKind::NoContent => serde_json::from_str(self.text(lang)).ok(),
        }
    }
}

/// The response documented for `operation` with `status`, if there is one.
pub fn find(operation: Operation, status: u16) -> Option<&'static DocumentedResponse> {
    RESPONSES
        .iter()
        .find(|response| response.operation == operation && response.status == status)
}

/// The responses documented for `operation`, in the spec's order.
pub fn for_operation(operation: Operation) -> impl Iterator<Item = &'static DocumentedResponse> {
    RESPONSES
        .iter()
        .filter(move |response| response.operation == operation)
}

const fn json(
    operation: Operation,
    status: u16,
    zh: &'static str,
    en: &'static str,
) -> DocumentedResponse {
    DocumentedResponse {
        operation,
        status,
        kind: BodyKind::Json,
        zh,
        en,
    }
}

const fn no_content(operation: Operation) -> DocumentedResponse {
    DocumentedResponse {
        operation,
        status: 204,
        kind: BodyKind::NoContent,
        zh: "null",
        en: "null",
    }
}

// The bodies, once each; the same body text recurs under several operations.

const LIST_200: &str = r#"[
  {
    "key": "pb_backup_20230519162514.zip",
    "modified": "2023-05-19 16:25:57.542Z",
    "size": 251316185
  },
  {
    "key": "pb_backup_20230518162514.zip",
    "modified": "2023-05-18 16:25:57.542Z",
    "size": 251314010
  }
]"#;

const ZH_STORAGE_400: &str = r#"{
  "status": 400,
  "message": "加载备份文件系统失败。",
  "data": {}
}"#;

const EN_STORAGE_400: &str = r#"{
  "status": 400,
  "message": "Failed to load backups filesystem.",
  "data": {}
}"#;

const ZH_401: &str = r#"{
  "status": 401,
  "message": "请求需要有效的记录授权令牌。",
  "data": {}
}"#;

const EN_401: &str = r#"{
  "status": 401,
  "message": "The request requires valid record authorization token.",
  "data": {}
}"#;

const ZH_403: &str = r#"{
  "status": 403,
  "message": "只有超级用户可以执行此操作。",
  "data": {}
}"#;

const EN_403: &str = r#"{
  "status": 403,
  "message": "Only superusers can perform this action.",
  "data": {}
}"#;

const ZH_404: &str = r#"{
  "status": 404,
  "message": "请求的资源未找到。",
  "data": {}
}"#;

const EN_404: &str = r#"{
  "status": 404,
  "message": "The requested resource wasn't found.",
  "data": {}
}"#;

const ZH_BUSY_CREATE_400: &str = r#"{
  "status": 400,
  "message": "请稍后重试 - 另一个备份/恢复进程已经启动。",
  "data": {}
}"#;

const ZH_BUSY_DELETE_RESTORE_400: &str = r#"{
  "status": 400,
  "message": "请稍后重试 - 另一个备份/恢复进程已在运行。",
  "data": {}
}"#;

// The English edition uses one busy text for create, delete and restore.
const EN_BUSY_400: &str = r#"{
  "status": 400,
  "message": "Try again later - another backup/restore process has already been started.",
  "data": {}
}"#;

const ZH_UPLOAD_400: &str = r#"{
  "status": 400,
  "message": "上传备份失败。",
  "data": {
    "file": {
      "code": "validation_invalid_mime_type",
      "message": "文件必须是 zip 压缩包。"
    }
  }
}"#;

const EN_UPLOAD_400: &str = r#"{
  "status": 400,
  "message": "Failed to upload the backup.",
  "data": {
    "file": {
      "code": "validation_invalid_mime_type",
      "message": "The file must be a zip archive."
    }
  }
}"#;

/// All documented responses, in the spec's order.
pub static RESPONSES: &[DocumentedResponse] = &[
    json(Operation::List, 200, LIST_200, LIST_200),
    json(Operation::List, 400, ZH_STORAGE_400, EN_STORAGE_400),
    json(Operation::List, 401, ZH_401, EN_401),
    json(Operation::List, 403, ZH_403, EN_403),
    no_content(Operation::Create),
    json(Operation::Create, 400, ZH_BUSY_CREATE_400, EN_BUSY_400),
    json(Operation::Create, 401, ZH_401, EN_401),
    json(Operation::Create, 403, ZH_403, EN_403),
    no_content(Operation::Upload),
    json(Operation::Upload, 400, ZH_UPLOAD_400, EN_UPLOAD_400),
    json(Operation::Upload, 401, ZH_401, EN_401),
    json(Operation::Upload, 403, ZH_403, EN_403),
    no_content(Operation::Delete),
    json(
        Operation::Delete,
        400,
        ZH_BUSY_DELETE_RESTORE_400,
        EN_BUSY_400,
    ),
    json(Operation::Delete, 401, ZH_401, EN_401),
    json(Operation::Delete, 403, ZH_403, EN_403),
    json(Operation::Delete, 404, ZH_404, EN_404),
    no_content(Operation::Restore),
    json(
        Operation::Restore,
        400,
        ZH_BUSY_DELETE_RESTORE_400,
        EN_BUSY_400,
    ),
    json(Operation::Restore, 401, ZH_401, EN_401),
    json(Operation::Restore, 403, ZH_403, EN_403),
    json(Operation::Restore, 404, ZH_404, EN_404),
    DocumentedResponse {
        operation: Operation::Download,
        status: 200,
        kind: BodyKind::FileStream,
        zh: "[备份文件流]",
        en: "[backup file stream]",
    },
    json(Operation::Download, 400, ZH_STORAGE_400, EN_STORAGE_400),
    json(Operation::Download, 401, ZH_401, EN_401),
    json(Operation::Download, 403, ZH_403, EN_403),
    json(Operation::Download, 404, ZH_404, EN_404),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn there_are_27_responses_with_unique_operation_and_status() {
        assert_eq!(RESPONSES.len(), 27);
        let pairs: BTreeSet<(Operation, u16)> =
            RESPONSES.iter().map(|r| (r.operation, r.status)).collect();
        assert_eq!(pairs.len(), RESPONSES.len());
    }

    #[test]
    fn counts_per_operation_are_4_4_4_5_5_5() {
        let counts: Vec<usize> = Operation::ALL
            .iter()
            .map(|&op| for_operation(op).count())
            .collect();
        assert_eq!(counts, [4, 4, 4, 5, 5, 5]);
    }

    #[test]
    fn statuses_per_operation_match_the_spec() {
        let statuses = |op| for_operation(op).map(|r| r.status).collect::<Vec<_>>();
        assert_eq!(statuses(Operation::List), [200, 400, 401, 403]);
        assert_eq!(statuses(Operation::Create), [204, 400, 401, 403]);
        assert_eq!(statuses(Operation::Upload), [204, 400, 401, 403]);
        assert_eq!(statuses(Operation::Delete), [204, 400, 401, 403, 404]);
        assert_eq!(statuses(Operation::Restore), [204, 400, 401, 403, 404]);
        assert_eq!(statuses(Operation::Download), [200, 400, 401, 403, 404]);
    }

    #[test]
    fn find_returns_the_matching_entry_or_none() {
        for response in RESPONSES {
            assert_eq!(find(response.operation, response.status), Some(response));
        }
        assert_eq!(find(Operation::List, 404), None);
        assert_eq!(find(Operation::Create, 200), None);
    }

    #[test]
    fn every_non_stream_body_parses_in_both_languages() {
        for response in RESPONSES {
            for lang in Lang::ALL {
                let parsed = response.body(lang);
                match response.kind {
                    BodyKind::FileStream => assert_eq!(parsed, None),
                    BodyKind::NoContent => assert_eq!(parsed, Some(Value::Null)),
                    BodyKind::Json => assert!(
                        parsed.is_some(),
                        "{:?} {} {lang:?} does not parse",
                        response.operation,
                        response.status
                    ),
                }
            }
        }
    }

    #[test]
    fn kinds_follow_statuses() {
        for response in RESPONSES {
            let expected = match (response.operation, response.status) {
                (_, 204) => BodyKind::NoContent,
                (Operation::Download, 200) => BodyKind::FileStream,
                _ => BodyKind::Json,
            };
            assert_eq!(response.kind, expected, "{response:?}");
        }
    }

    /// The message each error response must carry, from the named constants.
    fn expected_message(operation: Operation, status: u16, messages: &Messages) -> &'static str {
        match (operation, status) {
            (_, 401) => messages.unauthorized,
            (_, 403) => messages.forbidden,
            (_, 404) => messages.not_found,
            (Operation::List | Operation::Download, 400) => messages.storage_failure,
            (Operation::Create, 400) => messages.busy_create,
            (Operation::Delete | Operation::Restore, 400) => messages.busy_delete_restore,
            (Operation::Upload, 400) => messages.upload_failure,
            other => panic!("no error response expected for {other:?}"),
        }
    }

    #[test]
    fn error_bodies_carry_status_message_data_in_that_order() {
        for response in RESPONSES.iter().filter(|r| r.status >= 400) {
            for lang in Lang::ALL {
                let body = response.body(lang).expect("error bodies are JSON");
                let object = body.as_object().expect("error bodies are objects");
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                assert_eq!(keys, ["status", "message", "data"], "{response:?}");
                assert_eq!(body["status"], u64::from(response.status));
                let message =
                    expected_message(response.operation, response.status, lang.messages());
                assert_eq!(body["message"], message, "{response:?} {lang:?}");
            }
        }
    }

    #[test]
    fn only_the_upload_400_has_data_fields() {
        for response in RESPONSES.iter().filter(|r| r.status >= 400) {
            for lang in Lang::ALL {
                let body = response.body(lang).expect("error bodies are JSON");
                if (response.operation, response.status) == (Operation::Upload, 400) {
                    let file = &body["data"]["file"];
                    assert_eq!(file["code"], UPLOAD_NOT_ZIP_CODE);
                    assert_eq!(file["message"], lang.messages().upload_not_zip);
                    assert_eq!(body["data"].as_object().map(|d| d.len()), Some(1));
                } else {
                    assert_eq!(body["data"], serde_json::json!({}), "{response:?}");
                }
            }
        }
    }

    #[test]
    fn list_200_204_are_the_same_in_both_languages_and_the_rest_differ() {
        for response in RESPONSES {
            let same = response.status == 204
                || (response.operation, response.status) == (Operation::List, 200);
            assert_eq!(response.zh == response.en, same, "{response:?}");
        }
    }

    #[test]
    fn english_text_is_the_chinese_text_with_messages_swapped() {
        // Layout must be identical: only message strings differ between editions.
        let pairs = [
            (ZH.unauthorized, EN.unauthorized),
            (ZH.forbidden, EN.forbidden),
            (ZH.not_found, EN.not_found),
            (ZH.busy_create, EN.busy_create),
            (ZH.busy_delete_restore, EN.busy_delete_restore),
            (ZH.storage_failure, EN.storage_failure),
            (ZH.upload_failure, EN.upload_failure),
            (ZH.upload_not_zip, EN.upload_not_zip),
            ("[备份文件流]", "[backup file stream]"),
        ];
        for response in RESPONSES {
            let translated = pairs
                .iter()
                .fold(response.zh.to_string(), |text, (zh, en)| {
                    text.replace(zh, en)
                });
            assert_eq!(translated, response.en, "{response:?}");
        }
    }

    #[test]
    fn busy_texts_differ_in_chinese_only() {
        assert_ne!(ZH.busy_create, ZH.busy_delete_restore);
        assert_eq!(EN.busy_create, EN.busy_delete_restore);
    }

    #[test]
    fn list_example_is_newest_first_with_the_documented_fields() {
        let body = find(Operation::List, 200)
            .and_then(|r| r.body(Lang::Zh))
            .expect("list 200 is JSON");
        let items = body.as_array().expect("an array");
        assert_eq!(items.len(), 2);
        for item in items {
            let keys: Vec<&str> = item
                .as_object()
                .expect("objects")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["key", "modified", "size"]);
        }
        assert!(items[0]["modified"].as_str() > items[1]["modified"].as_str());
    }

    #[test]
    fn methods_and_paths_are_the_four_documented_routes() {
        let routes: BTreeSet<(&str, &str)> = RESPONSES
            .iter()
            .map(|r| (r.method().as_str(), r.path()))
            .collect();
        let expected: BTreeSet<(&str, &str)> = [
            ("GET", "/api/backups"),
            ("POST", "/api/backups"),
            ("POST", "/api/backups/upload"),
            ("DELETE", "/api/backups/{key}"),
            ("POST", "/api/backups/{key}/restore"),
            ("GET", "/api/backups/{key}"),
        ]
        .into_iter()
        .collect();
        assert_eq!(routes, expected);
    }

    #[test]
    fn every_operation_has_a_doc_in_both_languages_with_the_superuser_line() {
        for op in Operation::ALL {
            assert!(
                op.doc(Lang::Zh).description.ends_with(ZH.forbidden),
                "{op:?}"
            );
            assert!(
                op.doc(Lang::En).description.ends_with(EN.forbidden),
                "{op:?}"
            );
            assert_eq!(
                op.doc(Lang::Zh).warning.is_some(),
                op.doc(Lang::En).warning.is_some(),
                "{op:?}"
            );
        }
        let warned: Vec<Operation> = Operation::ALL
            .into_iter()
            .filter(|op| op.doc(Lang::Zh).warning.is_some())
            .collect();
        assert_eq!(warned, [Operation::Delete, Operation::Restore]);
    }
}
