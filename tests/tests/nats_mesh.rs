//! Daemons signaling through a real nats-server that each test starts on free loopback ports.

use std::time::Duration;

use anyhow::Result;
use peerix_client::SendOptions;
use peerix_ipc_proto::{ErrorBody, ErrorCode, JoinOptions, OptionFlag};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(15);

async fn nats_daemon(
    env: &TestEnv,
    name: &str,
    nats: &NatsServer,
    extra: &[&str],
) -> Result<DaemonProc> {
    let url = nats.url();
    let mut args = vec!["--nats", url.as_str(), "--driver", "nats"];
    args.extend_from_slice(extra);
    env.daemon(name, &args).await
}

/// Joins `room` on the `nats` driver expecting the driver to refuse the connection: returns the
/// DRIVER_ERROR, after checking that the daemon still answers.
async fn nats_join_refused(d: &DaemonProc, room: &str) -> Result<ErrorBody> {
    let c = d.client().await?;
    let mut args = peerix_ipc_proto::JoinArgs::new(room);
    args.driver = Some("nats".into());
    let err = c.join(args).await.expect_err("the join must fail");
    let body = err.daemon_error().expect("a daemon error").clone();
    assert_eq!(body.code, ErrorCode::DriverError, "{body:?}");
    assert!(c.status().await.is_ok(), "the daemon must keep running");
    Ok(body)
}

/// Writes a daemon config in `dir` whose default driver is NATS at `nats`, with more
/// `[drivers.nats]` lines; returns its path.
fn nats_config(
    dir: &std::path::Path,
    name: &str,
    nats: &NatsServer,
    extra: &str,
) -> Result<String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "default_driver = \"nats\"\n[drivers.nats]\nservers = [\"{}\"]\n{extra}",
            nats.url()
        ),
    )?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_four_daemons_mesh_over_nats() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let mut daemons = Vec::new();
    for i in 0..4 {
        daemons.push(nats_daemon(&env, &format!("n{i}"), &nats, &[]).await?);
    }
    // Two first, then two more join the same room.
    let mut members = vec![
        Member::join(&daemons[0], "natsroom", |_| {}).await?,
        Member::join(&daemons[1], "natsroom", |_| {}).await?,
    ];
    full_mesh(&mut members, 0, T).await?;
    members.push(Member::join(&daemons[2], "natsroom", |_| {}).await?);
    members.push(Member::join(&daemons[3], "natsroom", |_| {}).await?);
    full_mesh(&mut members, 2, T).await?;
    let st = members[0].client.status().await?;
    assert!(
        st.drivers.iter().any(|d| d.kind == "nats" && d.active),
        "{st:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_keeps_peers_and_new_daemons_join_after_restart() -> Result<()> {
    let mut nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let d0 = nats_daemon(&env, "o0", &nats, &[]).await?;
    let d1 = nats_daemon(&env, "o1", &nats, &[]).await?;
    let mut a = Member::join(&d0, "outage", |_| {}).await?;
    let mut b = Member::join(&d1, "outage", |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a-b connected", T, |e| is(e, "connection:connected", &b_id))
        .await?;
    a.open("chat").await?;
    b.wait_for("chat open", T, |e| is(e, "channel:open", &a_id))
        .await?;

    nats.kill();
    a.wait_for("driver inactive", T, |e| e.name == "driver:inactive")
        .await?;
    // Signaling is only needed for discovery: the established peers keep talking.
    for i in 0..3 {
        let text = format!("during outage {i}");
        let r = a
            .client
            .send_text("outage", "chat", &text, SendOptions::default())
            .await?;
        assert!(r.peers.expect("report").iter().all(|p| p.ok));
        b.wait_for("message during outage", T, |e| {
            e.name == "channel:message" && field(e, "data") == Some(text.as_str())
        })
        .await?;
    }
    assert_eq!(a.client.peers("outage").await?[0].state, "connected");

    nats.restart()?;
    a.wait_for("driver active again", Duration::from_secs(30), |e| {
        e.name == "driver:active"
    })
    .await?;
    // A daemon that joins after the restart connects to both.
    let d2 = nats_daemon(&env, "o2", &nats, &[]).await?;
    let mut c = Member::join(&d2, "outage", |_| {}).await?;
    c.wait_for("c-a", T, |e| is(e, "connection:connected", &a_id))
        .await?;
    c.wait_for("c-b", T, |e| is(e, "connection:connected", &b_id))
        .await?;
    Ok(())
}

#[tokio::test]
async fn wrong_nats_credentials_give_a_clear_error() -> Result<()> {
    let nats = NatsServer::start(&["--user", "peerix", "--pass", "right"])?;
    let env = TestEnv::new()?;
    // No credentials configured at all: the join fails with the driver's reason.
    let d = env.daemon("c", &["--nats", &nats.url()]).await?;
    let body = nats_join_refused(&d, "secured").await?;
    assert!(body.message.contains("authorization"), "{body:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_mismatch_is_an_error_event_not_silence() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let d0 = nats_daemon(&env, "m0", &nats, &[]).await?;
    let d1 = nats_daemon(&env, "m1", &nats, &[]).await?;
    // Metadata makes the plain side's invoke non-empty: the first non-empty payload is where the
    // mismatch shows (§2.4).
    let mut plain = Member::join(&d0, "mismatch", |j| {
        j.metadata = Some(rmpv::Value::from("plain"));
        j.options = Some(JoinOptions {
            signaling_encryption: Some(OptionFlag::Bool(false)),
            ..Default::default()
        })
    })
    .await?;
    let mut enc = Member::join(&d1, "mismatch", |_| {}).await?;
    let e1 = enc
        .wait_for("error at the encrypting side", T, |e| e.name == "error")
        .await?;
    let msg = value(&e1, "error")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("SIGNALING_ERROR") && msg.contains("signalingEncryption"),
        "{msg}"
    );
    // The plain side never receives a non-empty payload in this order (the encrypting side drops
    // the invoke it cannot trust), so it sees no peer at all rather than a half-open one.
    assert!(plain.client.peers("mismatch").await?.is_empty());
    drop(plain.drain_for(Duration::from_millis(10)).await);
    Ok(())
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &std::path::Path) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=peerix test CA",
    ]);
    openssl(dir, &ca)?;
    for (name, usage, san) in [
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("{san}basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"),
        )?;
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

/// A nats-server that requires TLS with client certificates (mutual TLS): daemons configured
/// with the CA and a client certificate mesh through it; one without a client certificate gets
/// a DRIVER_ERROR and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_nats() -> Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let p = |f: &str| certs.path().join(f).display().to_string();
    let nats = NatsServer::start_with_conf(
        &[],
        &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}",
            p("server.pem"),
            p("server.key"),
            p("ca.pem")
        ),
    )?;
    let env = TestEnv::new()?;
    let ca_only = format!("require_tls = true\ntls_ca_file = \"{}\"\n", p("ca.pem"));
    let with_cert = format!(
        "{ca_only}tls_client_cert = \"{}\"\ntls_client_key = \"{}\"\n",
        p("client.pem"),
        p("client.key")
    );
    let full = nats_config(certs.path(), "with-cert", &nats, &with_cert)?;
    let da = env.daemon("tls-a", &["--config", &full]).await?;
    let db = env.daemon("tls-b", &["--config", &full]).await?;
    let mut members = vec![
        Member::join(&da, "tls-room", |_| {}).await?,
        Member::join(&db, "tls-room", |_| {}).await?,
    ];
    full_mesh(&mut members, 0, T).await?;
    let to_b = SendOptions::to(members[1].id.clone());
    members[0].open("chat").await?;
    let r = members[0]
        .client
        .send_text("tls-room", "chat", "over mutual TLS signaling", to_b)
        .await?;
    assert!(r.peers.is_some_and(|p| p.iter().all(|p| p.ok)));

    // Only the CA, no client certificate: the server refuses the handshake.
    let no_cert = nats_config(certs.path(), "ca-only", &nats, &ca_only)?;
    let dc = env.daemon("tls-c", &["--config", &no_cert]).await?;
    let body = nats_join_refused(&dc, "tls-room").await?;
    // The TLS alert names the cause (e.g. "received fatal alert: BadCertificate").
    assert!(
        body.message.to_lowercase().contains("certificate"),
        "{body:?}"
    );
    Ok(())
}

/// A nats-server that only admits one NKey user: daemons configured with its seed connect
/// and mesh; one with another user's seed is refused with a DRIVER_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_authentication() -> Result<()> {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with_conf(
        &[],
        &format!(
            "authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}",
            user.public_key()
        ),
    )?;
    let env = TestEnv::new()?;
    let dir = tempfile::tempdir()?;
    let seed_line =
        |k: &nkeys::KeyPair| -> Result<String> { Ok(format!("nkey_seed = \"{}\"\n", k.seed()?)) };
    let good = nats_config(dir.path(), "user", &nats, &seed_line(&user)?)?;
    let da = env.daemon("nk-a", &["--config", &good]).await?;
    let db = env.daemon("nk-b", &["--config", &good]).await?;
    let mut members = vec![
        Member::join(&da, "nkey-room", |_| {}).await?,
        Member::join(&db, "nkey-room", |_| {}).await?,
    ];
    full_mesh(&mut members, 0, T).await?;

    let bad = nats_config(dir.path(), "stranger", &nats, &seed_line(&stranger)?)?;
    let dc = env.daemon("nk-c", &["--config", &bad]).await?;
    let body = nats_join_refused(&dc, "nkey-room").await?;
    assert!(body.message.contains("authorization"), "{body:?}");
    Ok(())
}

/// A room from the command line whose nats-server is not up yet: the daemon runs anyway,
/// reports the failure once, and joins the room as soon as the server comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_room_is_joined_once_its_driver_comes_up() -> Result<()> {
    let mut nats = NatsServer::start(&[])?;
    nats.kill(); // the port is ours; nothing listens on it yet
    let env = TestEnv::new()?;
    let url = nats.url();
    let d0 = env
        .daemon(
            "w0",
            &["--nats", &url, "--driver", "nats", "--join", "waiting"],
        )
        .await?;
    let c = d0.client().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        c.status().await.is_ok(),
        "the daemon serves clients meanwhile"
    );
    nats.restart()?;
    let d1 = env
        .daemon("w1", &["--nats", &url, "--driver", "nats"])
        .await?;
    let mut b = Member::join(&d1, "waiting", |_| {}).await?;
    b.wait_for("the configured room's daemon connects", T, |e| {
        e.name == "connection:connected"
    })
    .await?;
    Ok(())
}
