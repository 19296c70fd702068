//! Tests of the command line: flags reach the configurations they name.

use super::*;

fn s3_args(extra: &[&str]) -> S3Args {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        s3: S3Args,
    }
    let mut argv = vec!["x", "--backups-s3-bucket", "b"];
    argv.extend_from_slice(extra);
    Wrap::try_parse_from(argv).unwrap().s3
}

fn resolve(args: &S3Args, env: &[(&str, &str)]) -> Result<(S3Config, KeySource), String> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    args.config_from(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .map(|c| c.expect("a bucket was given"))
        .map_err(|e| e.to_string())
}

const AWS: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "aws-id"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
    ("AWS_SESSION_TOKEN", "aws-token"),
    ("AWS_REGION", "eu-west-3"),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
];

#[test]
fn s3_settings_come_from_the_standard_aws_variables() {
    let (c, source) = resolve(&s3_args(&[]), &AWS).unwrap();
    assert_eq!(source, KeySource::Aws { session_token: true });
    assert_eq!((c.access_key.as_deref(), c.secret_key.as_deref()), (Some("aws-id"), Some("aws-secret")));
    assert_eq!(c.session_token.as_deref(), Some("aws-token"));
    assert_eq!((c.region.as_str(), c.endpoint.as_deref()), ("eu-west-3", Some("http://127.0.0.1:9000")));
    let s3_endpoint = [AWS[4], ("AWS_ENDPOINT_URL_S3", "http://s3.local"), ("AWS_DEFAULT_REGION", "ap-south-1")];
    let (c, source) = resolve(&s3_args(&[]), &s3_endpoint).unwrap();
    assert_eq!(source, KeySource::DefaultChain);
    assert_eq!((c.region.as_str(), c.endpoint.as_deref()), ("ap-south-1", Some("http://s3.local")));
    let (c, _) = resolve(&s3_args(&[]), &[]).unwrap();
    assert_eq!((c.region.as_str(), c.endpoint), ("us-east-1", None));
}

#[test]
fn our_s3_settings_win_and_are_never_mixed_with_aws_keys() {
    let mut env = AWS.to_vec();
    env.extend([("PB_BACKUPS_S3_ACCESS_KEY", "our-id"), ("PB_BACKUPS_S3_SECRET_KEY", "our-secret")]);
    let args = s3_args(&["--backups-s3-region", "us-west-2", "--backups-s3-endpoint", "http://ours"]);
    let (c, source) = resolve(&args, &env).unwrap();
    assert_eq!(source, KeySource::Ours);
    assert_eq!((c.access_key.as_deref(), c.secret_key.as_deref()), (Some("our-id"), Some("our-secret")));
    assert_eq!(c.session_token, None, "an AWS session token does not go with our keys");
    assert_eq!((c.region.as_str(), c.endpoint.as_deref()), ("us-west-2", Some("http://ours")));
    let half = resolve(&s3_args(&[]), &[("AWS_ACCESS_KEY_ID", "aws-id")]).unwrap_err();
    assert!(half.contains("AWS_SECRET_ACCESS_KEY"), "{half}");
    let shown = KeySource::Aws { session_token: true }.to_string();
    assert!(!shown.contains("aws-id") && shown.contains("AWS_SESSION_TOKEN"));
}

#[test]
fn serve_flags_reach_the_server_config() {
    let cli = Cli::try_parse_from([
        "pb-backups", "serve", "--dir", "d", "--max-archive-size", "12345", "--max-archive-entries", "678", "--login-burst", "7",
        "--login-interval-ms", "250", "--trusted-proxy", "10.0.0.0/8", "192.0.2.1",
    ])
    .unwrap();
    let Command::Serve { dir, lang, limits, login, s3, .. } = cli.command else {
        panic!("not serve");
    };
    let config = serve_config(dir, &lang, &limits, login, &s3).unwrap();
    assert_eq!(config.limits.max_total_size, 12345);
    assert_eq!(config.limits.max_entries, 678);
    let Command::Serve { limits, .. } = Cli::try_parse_from(["pb-backups", "serve", "--dir", "d"]).unwrap().command else {
        panic!("not serve");
    };
    assert_eq!(limits.limits().max_entries, 10_000_000, "the default entry cap");
    assert_eq!((config.login_rate.burst, config.login_rate.per_attempt), (7, std::time::Duration::from_millis(250)));
    let proxies: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.1/32"]);
    assert!(Cli::try_parse_from(["pb-backups", "serve", "--restore-max-size", "1"]).is_err(), "the old name is gone");
}

/// The offline commands that make, restore or check archives take the server's limits.
#[test]
fn offline_commands_take_the_archive_limits() {
    let flags = ["--max-archive-size", "999", "--max-archive-entries", "5"];
    for command in [&["create", "x.zip"][..], &["restore", "x.zip"], &["verify", "x.zip"]] {
        let args = ["pb-backups", "backups"].iter().chain(command).chain(&["--dir", "d"]).chain(&flags);
        let limits = match Cli::try_parse_from(args).unwrap().command {
            Command::Backups(BackupsCommand::Create { limits, .. })
            | Command::Backups(BackupsCommand::Restore { limits, .. })
            | Command::Backups(BackupsCommand::Verify { limits, .. }) => limits.limits(),
            other => panic!("{other:?}"),
        };
        assert_eq!((limits.max_total_size, limits.max_entries), (999, 5), "{command:?}");
    }
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let net = |s: &str| parse_net(s).map(|n| n.to_string());
    assert_eq!(net("10.0.0.0/8").as_deref(), Ok("10.0.0.0/8"));
    assert_eq!(net("192.0.2.1").as_deref(), Ok("192.0.2.1/32"));
    assert_eq!(net("::1").as_deref(), Ok("::1/128"));
    assert!(net("proxy.local").is_err());
}
