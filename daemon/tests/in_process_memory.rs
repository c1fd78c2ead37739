//! Several daemons inside one process on the in-memory driver: the way in-process tests and
//! benchmarks host many peers without sockets between them (real WebRTC still runs over loopback).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use peerix_ipc_proto::{EventFilter, JoinArgs, OpenArgs};
use peerix_wire::identity::Identity;
use peerix_wire::transfer::PayloadType;
use peerixd::actors::daemon::Exec;
use peerixd::actors::event_bus::{Deliver, Replay, Subscribe};
use peerixd::actors::outgoing::OutgoingMessage;
use peerixd::config::DaemonConfig;

struct Collector(Arc<Mutex<Vec<(String, rmpv::Value)>>>);
impl Actor for Collector {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Collector {
    type Result = ();
    fn handle(&mut self, d: Deliver, _: &mut Self::Context) {
        if let Ok(mut v) = self.0.lock() {
            v.push((d.event.name.to_string(), d.event.data.to_value()));
        }
    }
}

/// Never sent: the collector does not fall behind or resume.
impl Handler<Replay> for Collector {
    type Result = ();
    fn handle(&mut self, _: Replay, _: &mut Self::Context) {}
}

fn count(log: &Arc<Mutex<Vec<(String, rmpv::Value)>>>, name: &str) -> usize {
    log.lock()
        .map(|v| v.iter().filter(|(n, _)| n == name).count())
        .unwrap_or(0)
}

async fn wait(log: &Arc<Mutex<Vec<(String, rmpv::Value)>>>, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(log, name) < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} × {name}"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn three_daemons_in_one_process_on_the_memory_driver() {
    let sys = actix::System::new();
    sys.block_on(async {
        let cfg = Arc::new(DaemonConfig {
            default_driver: "memory".into(),
            ..DaemonConfig::default()
        });
        let mut daemons = Vec::new();
        let mut logs = Vec::new();
        for i in 0..3 {
            let running = peerixd::run::start(cfg.clone(), Identity::generate(), false)
                .await
                .expect("start");
            let log = Arc::new(Mutex::new(Vec::new()));
            let collector = Collector(log.clone()).start();
            running.bus.do_send(Subscribe {
                session: i,
                to: collector.clone().recipient(),
                replay: collector.recipient(),
                filter: Some(EventFilter::all()),
                since: None,
                gauge: None,
            });
            let room = "in-process-room-memory";
            running
                .daemon
                .send(Exec::Join(Box::new(JoinArgs::new(room).persistent()), None))
                .await
                .expect("mailbox")
                .expect("join");
            daemons.push(running);
            logs.push(log);
        }
        for log in &logs {
            wait(log, "connection:connected", 2).await;
        }
        for d in &daemons {
            d.daemon
                .send(Exec::Open(OpenArgs::new("in-process-room-memory", "chat")))
                .await
                .expect("mailbox")
                .expect("open");
        }
        for log in &logs {
            wait(log, "channel:open", 2).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        daemons[0]
            .routes
            .send(
                "in-process-room-memory",
                "chat",
                None,
                OutgoingMessage {
                    kind: PayloadType::Text,
                    info: None,
                    data: bytes::Bytes::from_static(b"hi all"),
                },
                None,
                move |peers| {
                    let _ = tx.send(peers);
                },
            )
            .expect("send");
        let res = rx.await.expect("every outcome");
        assert!(
            res.len() == 2 && res.iter().all(|(_, r)| r.is_ok()),
            "{res:?}"
        );
        wait(&logs[1], "channel:message", 1).await;
        wait(&logs[2], "channel:message", 1).await;
        assert_eq!(
            count(&logs[0], "channel:message"),
            0,
            "no echo to the sender"
        );
        for d in &daemons {
            peerixd::run::shutdown(d).await;
        }
    });
}
