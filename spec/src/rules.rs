//! How we read the spec, as numbered rules.
//!
//! The spec documents bodies but says little about which request earns which one; these
//! rules fix that reading (names, keys, order of checks, exclusivity, restore, accounts).
//! Tests and code comments cite them by id ("R12").

/// One rule of our reading of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub text: &'static str,
}

/// The rule with this id, if there is one.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

pub static RULES: &[Rule] = &[
    // Responses and languages.
    Rule {
        id: "R1",
        text: "Every error body is a JSON object with the keys status, message and data, in that order; status equals the HTTP status.",
    },
    Rule {
        id: "R2",
        text: "A documented error carries the documented message word for word; data is {} unless the spec shows fields in it.",
    },
    Rule {
        id: "R3",
        text: "Messages are in Chinese by default and in English when the request's Accept-Language prefers en or the server was started with English as its default. Messages the spec does not document exist in both languages too.",
    },
    // Who may call.
    Rule {
        id: "R4",
        text: "Every operation is for superusers only. The caller is checked before anything else: no valid credentials gives 401, valid credentials of a record that is not a superuser give 403, and neither changes anything.",
    },
    Rule {
        id: "R5",
        text: "List, create, upload, delete and restore take an auth token in the Authorization header, bare or after \"Bearer \". The token is not valid when it is malformed, wrongly signed, expired, not HS256, a file token, or belongs to a record that was deleted or whose password changed after the token was issued.",
    },
    Rule {
        id: "R6",
        text: "Download takes a file token in the token query parameter instead: missing, malformed, expired or not a file token gives 401; the file token of a non-superuser gives 403.",
    },
    // List.
    Rule {
        id: "R7",
        text: "List and download answer 400 with the storage-failure message when the backups storage cannot be opened or listed.",
    },
    Rule {
        id: "R8",
        text: "List answers 200 with an array of {key, modified, size}, newest first (modified descending, then key ascending). modified is UTC with milliseconds, like 2023-05-19 16:25:57.542Z; size is in bytes. The fields query parameter selects fields and supports :excerpt.",
    },
    // Names and keys.
    Rule {
        id: "R9",
        text: "A key is possible when it is not empty, has at most 150 characters, ends in \".zip\", does not start with \".\", and holds no \"/\", no \"\\\", no NUL and no other control character. A key that is not possible never names a backup.",
    },
    Rule {
        id: "R10",
        text: "A key is taken while a backup with that key exists and while a create with that key is in progress.",
    },
    Rule {
        id: "R11",
        text: "The create name is optional; an empty name counts as absent. A given name must have at most 150 characters (else validation_length_out_of_range, checked first) and match ^[a-z0-9_-]+\\.zip$ (else validation_match_invalid). These errors are 400 with the code under data.name.",
    },
    Rule {
        id: "R12",
        text: "Without a name the server generates pb_backup_YYYYMMDDHHMMSS.zip from the UTC time, made unique when that second's name is taken.",
    },
    // Exclusivity.
    Rule {
        id: "R13",
        text: "At most one create or restore runs at a time, server-wide, from the moment it is accepted until it has finished; a restore finishes when the restarted server serves.",
    },
    Rule {
        id: "R14",
        text: "While a create or restore runs, list, upload, download, and delete of other keys go on as usual.",
    },
    // Create.
    Rule {
        id: "R15",
        text: "Create checks, in order: a create or restore runs (400, the create busy message); the name is not valid (R11); the name is taken (400, validation_backup_name_exists under data.name). Otherwise the backup runs and the request answers 204 once the backup is complete and stored.",
    },
    Rule {
        id: "R16",
        text: "A backup appears in the list, and can be downloaded, only once it is complete; until then its key is taken (R10) but unknown to list, download and restore.",
    },
    Rule {
        id: "R17",
        text: "A backup is a standard zip of the whole data dir except the backups storage and temp folders, with data.db taken as a consistent SQLite snapshot even while writes go on.",
    },
    // Upload.
    Rule {
        id: "R18",
        text: "Upload does not wait for, and is not refused by, a running create or restore.",
    },
    Rule {
        id: "R19",
        text: "The upload key is the base name of the uploaded file's name. Upload checks, in order: no file (400, validation_required under data.file); the key is not possible (400, a validation error under data.file); the file is not a zip archive (the documented 400); the key is taken (400, validation_backup_name_exists under data.file). Otherwise the file is stored under its key and the answer is 204.",
    },
    // Delete.
    Rule {
        id: "R20",
        text: "Delete checks, in order: the key is not possible (404); the key is the one being created or restored (400, the delete/restore busy message); no backup has the key (404). Otherwise the backup is deleted and the answer is 204.",
    },
    // Restore.
    Rule {
        id: "R21",
        text: "Restore checks, in order: the key is not possible (404); a create or restore runs (400, the delete/restore busy message); no backup has the key (404); the archive is not a valid backup (400, nothing changes). Otherwise the server is marked busy, then answers 204.",
    },
    Rule {
        id: "R22",
        text: "A valid backup archive is a zip that holds data.db, with no absolute path, no \"..\", no links, and a total size within limits.",
    },
    Rule {
        id: "R23",
        text: "An accepted restore replaces the data dir with the archive's content, keeps the backups storage as it was, and restarts the server on the same listening socket: clients see a pause, never a refused connection. Any failure before the restarted server serves puts the old data back whole.",
    },
    Rule {
        id: "R24",
        text: "After a restore the accounts and token secrets are those of the backup: earlier tokens stop working unless the backup holds the same records and secrets.",
    },
    // Download.
    Rule {
        id: "R25",
        text: "Download answers 404 for a key that is not possible or names no complete backup; otherwise 200 with the zip streamed, Content-Type application/zip, Content-Disposition attachment; filename=\"KEY\", and Accept-Ranges bytes. A Range request is answered with 206.",
    },
    // Accounts.
    Rule {
        id: "R26",
        text: "POST /api/collections/_superusers/auth-with-password and POST /api/collections/users/auth-with-password take {identity, password} and answer {token, record}.",
    },
    Rule {
        id: "R27",
        text: "POST /api/files/token, with any valid auth token, answers {token}: a short-lived file token of the same record.",
    },
    Rule {
        id: "R28",
        text: "Tokens are HS256 JWTs with the claims id, type (auth or file), collectionId and exp; auth tokens also carry refreshable.",
    },
    Rule {
        id: "R29",
        text: "GET /api/health answers 200 with {\"message\":\"API is healthy.\",\"code\":200,\"data\":{}}.",
    },
    Rule {
        id: "R30",
        text: "Where the upstream PocketBase server departs from the spec, the spec wins.",
    },
    // One data format with PocketBase.
    Rule {
        id: "R31",
        text: "An archive after which nobody could log in is not a valid backup: its data.db must hold a usable _superusers auth collection in PocketBase's layout (0.23 or later, with its token secrets) and at least one superuser; otherwise restore answers 400 before the 204 and nothing changes.",
    },
    Rule {
        id: "R32",
        text: "Accounts, password hashes (bcrypt), token secrets and settings live in data.db where PocketBase keeps them, and tokens are signed as PocketBase signs them, so a data dir or a backup moves between PocketBase and this server with its accounts and valid tokens.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_run_from_r1_without_gaps() {
        for (index, rule) in RULES.iter().enumerate() {
            assert_eq!(rule.id, format!("R{}", index + 1));
        }
    }

    #[test]
    fn texts_are_sentences() {
        for rule in RULES {
            assert!(rule.text.ends_with('.'), "{}", rule.id);
            assert!(
                rule.text.chars().next().is_some_and(char::is_uppercase),
                "{}",
                rule.id
            );
        }
    }

    #[test]
    fn lookup_by_id() {
        assert_eq!(rule("R20").map(|r| r.id), Some("R20"));
        assert_eq!(rule("R0"), None);
    }
}
