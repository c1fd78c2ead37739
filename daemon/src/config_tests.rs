//! Tests of the configuration loader (kept apart so `config.rs` reads in one sitting).
use super::load::load_with_env;
use super::*;
use std::io::Write;

fn write(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("tempfile");
    f.write_all(content.as_bytes()).expect("write");
    f
}

#[test]
fn defaults_are_peerix_defaults() {
    let c = load(None, &FlagOverrides::default(), true).expect("defaults load");
    assert!(c.room_defaults.namespace_hashing);
    assert!(c.room_defaults.signaling_encryption);
    assert_eq!(c.room_defaults.connection_timeout, 15_000);
    assert_eq!(c.room_defaults.ice_candidate_debounce, 50);
    assert_eq!(c.default_driver, "local");
    assert_eq!(c.ipc.max_frame, 16 << 20);
}

#[test]
fn file_then_flags_take_precedence() {
    let f = write(
        "log = \"debug\"\n[room_defaults]\nsignalingEncryption = false\n[[rooms]]\nid = \"demo\"\n",
    );
    let flags = FlagOverrides {
        log: Some("trace".into()),
        ..Default::default()
    };
    let c = load(Some(f.path()), &flags, true).expect("load");
    assert_eq!(c.log, "trace");
    assert!(!c.room_defaults.signaling_encryption);
    assert_eq!(c.rooms.len(), 1);
}

#[test]
fn unknown_key_is_named() {
    let f = write("[ipc]\nmax_frmae = 5\n");
    let e = load(Some(f.path()), &FlagOverrides::default(), true).expect_err("must fail");
    assert!(e.to_string().contains("max_frmae"), "{e}");
}

#[test]
fn bad_value_is_named() {
    let f = write("[room_defaults]\nconnectionTimeout = \"soon\"\n");
    let e = load(Some(f.path()), &FlagOverrides::default(), true).expect_err("must fail");
    assert!(e.to_string().contains("connectionTimeout"), "{e}");
    let f = write("default_driver = \"carrier-pigeon\"\n");
    let e = load(Some(f.path()), &FlagOverrides::default(), true).expect_err("must fail");
    assert!(e.to_string().contains("default_driver"), "{e}");
}

#[test]
fn operator_errors_say_what_is_wrong_and_where() {
    let none = FlagOverrides::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let e = load(Some(dir.path()), &none, true).expect_err("a directory");
    assert!(e.to_string().contains("is a directory"), "{e}");
    let missing = dir.path().join("nope.toml");
    let e = load(Some(&missing), &none, true).expect_err("missing");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // The file is named in errors the loader finds inside it.
    let f = write("[ipc]\nmax_frmae = 5\n");
    let e = load(Some(f.path()), &none, true).expect_err("unknown key");
    assert!(
        e.to_string().contains(&f.path().display().to_string()),
        "{e}"
    );
    let f = write("[webrtc]\nmax_message_size = 1000\n");
    let e = load(Some(f.path()), &none, true).expect_err("out of range");
    assert!(e.to_string().contains("webrtc.max_message_size"), "{e}");
    assert!(
        e.to_string().contains(&f.path().display().to_string()),
        "{e}"
    );
    let f = write("log = 5\n");
    let e = load(Some(f.path()), &none, true).expect_err("wrong type");
    assert!(e.to_string().contains("log: must be a string"), "{e}");
    let f = write("log = \"info,[[[\"\n");
    let e = load(Some(f.path()), &none, true).expect_err("bad filter");
    assert!(e.to_string().contains("is not a valid filter"), "{e}");
}

#[test]
fn unknown_environment_key_is_named_as_the_variable() {
    let mut env = config::Map::new();
    env.insert("PEERIX_IPC__MAX_FRMAE".to_string(), "5".to_string());
    let e = load_with_env(None, &FlagOverrides::default(), true, env).expect_err("unknown");
    assert!(
        e.to_string()
            .contains("environment variable PEERIX_IPC__MAX_FRMAE"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn unreadable_config_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let f = write("log = \"info\"\n");
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    if std::fs::read_to_string(f.path()).is_ok() {
        return; // root reads anything: nothing to check
    }
    let e = load(Some(f.path()), &FlagOverrides::default(), true).expect_err("unreadable");
    assert!(e.to_string().contains("permission denied"), "{e}");
}

#[test]
fn documented_example_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/peerixd.toml");
    let c = load(Some(&p), &FlagOverrides::default(), true).expect("config/peerixd.toml must load");
    assert!(c.drivers.nats.is_some());
}

#[test]
fn configuration_that_can_never_work_is_refused_at_start() {
    let none = FlagOverrides::default();
    let f = write("[drivers.nats]\nservers = [\"nats://host:notaport\"]\n");
    let e = load(Some(f.path()), &none, true).expect_err("bad URL");
    assert!(e.to_string().contains("drivers.nats.servers[0]"), "{e}");
    let f = write("[[rooms]]\nid = \"demo\"\ndriver = \"nats\"\n");
    let e = load(Some(f.path()), &none, true).expect_err("unconfigured driver");
    assert!(e.to_string().contains("rooms[demo].driver"), "{e}");
}

#[test]
fn a_lag_limit_at_or_above_the_hard_limit_is_refused() {
    let none = FlagOverrides::default();
    let f = write("[ipc]\nclient_queue_limit = 1048576\nlag_limit = 1048576\n");
    let e = load(Some(f.path()), &none, true).expect_err("lag limit not below the hard limit");
    assert!(e.to_string().contains("ipc.lag_limit"), "{e}");
    let f = write("[ipc]\nreplay_events = 10\nlag_limit = 4096\ninbox_events = 0\n");
    let c = load(Some(f.path()), &none, true).expect("valid");
    assert_eq!((c.ipc.replay_events, c.ipc.inbox_events), (10, 0));
}
