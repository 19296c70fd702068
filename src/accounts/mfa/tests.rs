//! Unit tests of the access options, codes, timestamps and the second-factor tables.

use super::*;
use serde_json::json;

#[test]
fn a_stored_code_hash_is_checked_within_the_password_cost_bound() {
    let hash = hash_code("12345678").unwrap();
    assert!(code_matches("12345678", &hash) && !code_matches("87654321", &hash));
    // The same salt and digest claiming cost 31 (about 42 hours a check): refused at once.
    let crafted = format!("{}31{}", &hash[..4], &hash[6..]);
    assert!(!code_matches("12345678", &crafted));
    let legacy = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    assert!(!code_matches("12345678", legacy), "codes are bcrypt only");
}

#[test]
fn options_as_pocketbase_writes_them_and_malformed_ones_refused() {
    let options = json!({
        "mfa": {"enabled": true, "duration": 600, "rule": "verified = true"},
        "otp": {"enabled": true, "duration": 180, "length": 8, "emailTemplate": {"subject": "S {APP_NAME}", "body": "B {OTP}"}},
        "authAlert": {"enabled": true, "emailTemplate": {"subject": "A", "body": "{ALERT_INFO}"}}
    });
    let (mfa, otp, alert) = parse_options(&options).unwrap();
    assert_eq!(mfa, MfaOptions { enabled: true, duration_secs: 600, rule: "verified = true".into() });
    assert_eq!((otp.enabled, otp.duration_secs, otp.length), (true, 180, 8));
    assert_eq!(otp.email_template.body, "B {OTP}");
    assert!(alert.enabled);
    // Absent sections are off.
    let (mfa, otp, alert) = parse_options(&json!({})).unwrap();
    assert!(!mfa.enabled && !otp.enabled && !alert.enabled);
    for bad in [
        json!({"mfa": {"enabled": "yes"}}),
        json!({"mfa": {"enabled": true, "duration": 0}}),
        json!({"mfa": {"enabled": true, "duration": -1}}),
        json!({"otp": {"enabled": true, "duration": 180, "length": 0}}),
        json!({"otp": {"enabled": true, "duration": 180, "length": 72}}),
        json!({"otp": {"enabled": true, "duration": 180, "length": 8, "emailTemplate": {"subject": 1}}}),
        json!({"mfa": {"rule": "x".repeat(super::super::rule::MAX_RULE_LEN + 1)}}),
    ] {
        assert!(parse_options(&bad).is_err(), "{bad}");
    }
}

#[test]
fn codes_are_digits_of_the_length_and_hashed_like_pocketbase() {
    let code = generate_code(8);
    assert_eq!(code.len(), 8);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert_ne!(generate_code(32), generate_code(32));
    let hash = hash_code(&code).unwrap();
    assert!(hash.starts_with("$2a$08$"), "{hash}");
    assert!(code_matches(&code, &hash));
    assert!(!code_matches("00000000x", &hash));
    assert!(!code_matches(&code, "not a hash"));
    // A hash PocketBase 0.40.6 wrote for the code 41432940 (measured).
    assert!(code_matches("41432940", "$2a$08$gCYPNZ5li5IpwCpGERppQeTe0RSBu1uF0YuwM.3hcOvktwr5pVdl2"));
}

#[test]
fn fingerprints_match_pocketbase_s() {
    // Measured on PocketBase 0.40.6: a login by curl 7.88.1 from 127.0.0.1.
    assert_eq!(fingerprint("127.0.0.1", "curl/7.88.1"), "31c54d6751a716e42db5807665d4a6b3");
    assert_eq!(fingerprint("127.0.0.1", "agent-two"), "2af6689399199f3ef7d3313b6df35f25");
    // Only the first 300 bytes of the user agent count.
    let long = "x".repeat(400);
    assert_eq!(fingerprint("::1", &long), fingerprint("::1", &long[..300]));
}

#[test]
fn expiry_counts_from_created() {
    let created = "2026-01-01 00:00:00.000Z";
    let at = parse_timestamp(created).unwrap();
    assert_eq!(format_timestamp(at), created);
    assert!(!expired(created, 180, at));
    assert!(!expired(created, 180, at + 180_000), "valid through its last millisecond");
    assert!(expired(created, 180, at + 180_001));
    assert!(expired("garbage", 180, at), "an unreadable time counts as expired");
    assert_eq!(parse_timestamp("2026-01-01 00:00:00Z"), Some(at));
    assert_eq!(alert_info(at, "127.0.0.1", "ua"), "2026-01-01 00:00:00.000Z - 127.0.0.1 ua");
}

#[test]
fn five_code_checks_per_record_in_three_minutes() {
    let attempts = OtpAttempts::default();
    let t0 = Instant::now();
    for _ in 0..OTP_ATTEMPTS {
        assert!(attempts.try_acquire("c", "r", t0));
    }
    assert!(!attempts.try_acquire("c", "r", t0 + Duration::from_secs(179)));
    assert!(attempts.try_acquire("c", "other", t0), "per record");
    assert!(attempts.try_acquire("c", "r", t0 + OTP_ATTEMPT_WINDOW), "a new window");
}

#[test]
fn codes_are_used_once_sessions_expire_and_requests_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    let record = accounts.upsert(super::super::Collection::Superusers, "a@b.co", "password123").unwrap();
    let mut c = accounts.collection("_superusers").unwrap().clone();
    c.otp.duration_secs = 180;
    c.mfa.duration_secs = 600;
    let t0 = parse_timestamp("2026-01-01 00:00:00.000Z").unwrap();

    let IssuedOtp::New { id } = accounts.create_otp(&c, &record, &hash_code("1234").unwrap(), t0).unwrap() else {
        panic!("a new code")
    };
    let found = accounts.find_otp(&c, &id, t0 + 180_000).unwrap().expect("valid through its duration");
    assert_eq!((found.sent_to.as_str(), found.record.id.as_str()), ("a@b.co", record.id.as_str()));
    assert!(accounts.find_otp(&c, &id, t0 + 180_001).unwrap().is_none(), "expired");
    let users = accounts.collection("users").unwrap().clone();
    assert!(accounts.find_otp(&users, &id, t0).unwrap().is_none(), "another collection's");
    assert!(accounts.complete_otp(&c, &found, t0).unwrap().is_some());
    assert!(accounts.complete_otp(&c, &found, t0).unwrap().is_none(), "used once, even by two requests at once");

    let session = accounts.begin_mfa(&c, &record, Method::Password, t0).unwrap();
    assert_eq!(accounts.check_mfa(&c, &record, &session, Method::Password, t0).unwrap(), MfaCheck::SameMethod);
    let other = accounts.upsert(super::super::Collection::Superusers, "c@d.co", "password123").unwrap();
    assert_eq!(accounts.check_mfa(&c, &other, &session, Method::Otp, t0).unwrap(), MfaCheck::OtherRecord);
    assert_eq!(accounts.check_mfa(&c, &record, &session, Method::Otp, t0 + 600_001).unwrap(), MfaCheck::InvalidOrExpired);
    assert_eq!(accounts.check_mfa(&c, &record, &session, Method::Otp, t0).unwrap(), MfaCheck::InvalidOrExpired, "deleted");
    let session = accounts.begin_mfa(&c, &record, Method::Otp, t0).unwrap();
    assert_eq!(accounts.check_mfa(&c, &record, &session, Method::Password, t0).unwrap(), MfaCheck::Passed);
    assert_eq!(accounts.check_mfa(&c, &record, &session, Method::Password, t0).unwrap(), MfaCheck::InvalidOrExpired, "used up");

    // Ten unexpired codes, then the newest again; once they expire, new ones again.
    let mut newest = String::new();
    for i in 0..MAX_RECENT_OTPS as i64 {
        let IssuedOtp::New { id } = accounts.create_otp(&c, &record, "h", t0 + i).unwrap() else { panic!("new") };
        newest = id;
    }
    assert_eq!(accounts.create_otp(&c, &record, "h", t0 + 20).unwrap(), IssuedOtp::Reused { id: newest });
    assert!(matches!(accounts.create_otp(&c, &record, "h", t0 + 200_000).unwrap(), IssuedOtp::New { .. }));

    // Origins: the first is recorded quietly, a new one after it is news, a known one not.
    assert_eq!(accounts.origin(&c, &record, "f1").unwrap(), Origin::First);
    accounts.save_origin(&c, &record, "f1", &Origin::First, t0).unwrap();
    assert!(matches!(accounts.origin(&c, &record, "f1").unwrap(), Origin::Known { .. }));
    assert_eq!(accounts.origin(&c, &record, "f2").unwrap(), Origin::New);
    for (i, f) in ["f2", "f3", "f4", "f5", "f6"].iter().enumerate() {
        accounts.save_origin(&c, &record, f, &Origin::New, t0 + 1 + i as i64).unwrap();
    }
    assert_eq!(accounts.origin(&c, &record, "f1").unwrap(), Origin::New, "the oldest goes beyond five");
    assert!(matches!(accounts.origin(&c, &record, "f6").unwrap(), Origin::Known { .. }));
}

proptest::proptest! {
    /// A collection's options come from a data dir: any JSON is read or refused, never a
    /// panic, and what is read is within the bounds.
    #[test]
    fn any_options_are_read_within_bounds_or_refused(
        enabled in proptest::option::of(proptest::bool::ANY),
        duration in proptest::prelude::any::<i64>(),
        length in proptest::prelude::any::<i64>(),
        rule in ".{0,20}",
    ) {
        let options = json!({
            "mfa": {"enabled": enabled, "duration": duration, "rule": rule},
            "otp": {"enabled": enabled, "duration": duration, "length": length},
            "authAlert": {"enabled": enabled},
        });
        if let Ok((mfa, otp, _)) = parse_options(&options) {
            proptest::prop_assert!(mfa.duration_secs <= MAX_DURATION_SECS);
            proptest::prop_assert!(!otp.enabled || (1..=MAX_OTP_LENGTH).contains(&otp.length));
            proptest::prop_assert!(!mfa.enabled || mfa.duration_secs > 0);
        }
    }

    #[test]
    fn any_timestamp_text_is_read_or_expired(text in ".{0,40}", duration in 0u64..1_000_000) {
        let _ = parse_timestamp(&text);
        if parse_timestamp(&text).is_none() {
            proptest::prop_assert!(expired(&text, duration, 0));
        }
    }
}
