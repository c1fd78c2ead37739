//! Supervision: a crashed peer actor is reported as an `error` event and replaced by a fresh
//! connection; the daemon and its other rooms keep running.

use std::time::Duration;

use anyhow::Result;
use peerix_client::SendOptions;
use peerix_ipc_proto::ErrorCode;
use peerix_system_tests::*;

fn map(fields: Vec<(&str, &str)>) -> rmpv::Value {
    rmpv::Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), rmpv::Value::from(v)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_peer_actor_is_restarted_and_reported() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env
        .daemon_with_env("a", &[], &[("PEERIXD_FAULT_INJECTION", "1")])
        .await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "sup", |_| {}).await?;
    let mut b = Member::join(&db, "sup", |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("connected", Duration::from_secs(10), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    a.open("chat").await?;
    a.wait_for("chat open", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id)
    })
    .await?;

    a.client
        .request_raw(
            "debug",
            map(vec![
                ("action", "panic-peer"),
                ("room", "sup"),
                ("peer", &b_id),
            ]),
        )
        .await?;
    let err = a
        .wait_for("error event", Duration::from_secs(5), |e| {
            e.name == "error" && field(e, "peer") == Some(b_id.as_str())
        })
        .await?;
    assert!(value(&err, "error")
        .map(|v| v.to_string())
        .unwrap_or_default()
        .contains("crashed"));
    a.wait_for("closed after crash", Duration::from_secs(5), |e| {
        is(e, "connection:closed", &b_id)
    })
    .await?;
    // The remote side saw the old connection go away, and both reconnect with a fresh one.
    b.wait_for(
        "b sees the old connection close",
        Duration::from_secs(10),
        |e| is(e, "connection:closed", &a_id),
    )
    .await?;
    a.wait_for("reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    // The room's labels are re-opened on the new connection and messages flow again.
    a.wait_for("chat reopened", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id)
    })
    .await?;
    let r = a
        .client
        .send_text("sup", "chat", "after restart", SendOptions::default())
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    b.wait_for("message", Duration::from_secs(10), |e| {
        e.name == "channel:message" && field(e, "data") == Some("after restart")
    })
    .await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test]
async fn fault_injection_is_refused_by_default() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("plain", &[]).await?;
    let c = d.client().await?;
    let err = c
        .request_raw(
            "debug",
            map(vec![("action", "panic-peer"), ("room", "x"), ("peer", "y")]),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        err.daemon_error().map(|e| e.code.clone()),
        Some(ErrorCode::NotSupported)
    );
    Ok(())
}
