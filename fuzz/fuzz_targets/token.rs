//! Token verification (`auth::verify`) against real accounts in a temp data dir.
//!
//! Two checks: arbitrary input is never accepted (it cannot carry a valid signature), and
//! a valid token with any byte edited is refused unless the edit changed nothing, so a
//! token has exactly one accepted spelling.
//!
//! Input: first byte 0 = the rest is a token as is; otherwise the rest is a list of
//! (position, byte) edits applied to a freshly issued superuser token.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pb_backups::accounts::{Accounts, Collection};
use pb_backups::auth::{self, TokenKind};

const NOW: u64 = 1_700_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    accounts: Accounts,
    tokens: Vec<(TokenKind, String)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path()).unwrap();
        let superuser = accounts.upsert(Collection::Superusers, "admin@example.com", "password-1").unwrap();
        let user = accounts.upsert(Collection::Users, "user@example.com", "password-2").unwrap();
        let mut tokens = Vec::new();
        for record in [&superuser, &user] {
            for kind in [TokenKind::Auth, TokenKind::File] {
                tokens.push((kind, auth::issue(&accounts, record, kind, NOW).unwrap()));
            }
        }
        Fixture { _dir: dir, accounts, tokens }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode == 0 {
        let token = String::from_utf8_lossy(rest);
        if f.tokens.iter().any(|(_, t)| *t == token) {
            return;
        }
        for kind in [TokenKind::Auth, TokenKind::File] {
            assert!(auth::verify(&f.accounts, &token, kind, NOW).is_err(), "accepted {token:?}");
        }
        return;
    }
    let (kind, original) = &f.tokens[usize::from(mode) % f.tokens.len()];
    let mut bytes = original.clone().into_bytes();
    for edit in rest.chunks_exact(2) {
        let at = usize::from(edit[0]) % (bytes.len() + 1);
        match edit[1] {
            // 0xff deletes, 0xfe inserts a '.', anything else overwrites (or appends).
            0xff if at < bytes.len() => {
                bytes.remove(at);
            }
            0xfe => bytes.insert(at, b'.'),
            b if at < bytes.len() => bytes[at] = b,
            b => bytes.push(b),
        }
    }
    let edited = String::from_utf8_lossy(&bytes);
    let result = auth::verify(&f.accounts, &edited, *kind, NOW);
    if edited == original.as_str() {
        assert!(result.is_ok());
    } else {
        assert!(result.is_err(), "edited token accepted: {original} -> {edited}");
    }
    // Never valid as the other kind, edited or not.
    let other = if *kind == TokenKind::Auth { TokenKind::File } else { TokenKind::Auth };
    assert!(auth::verify(&f.accounts, &edited, other, NOW).is_err());
});
