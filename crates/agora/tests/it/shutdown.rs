//! `agora dev` stops on SIGTERM within its grace period even while a client holds a half-sent
//! request (Kubernetes kills a pod 30 s after SIGTERM; anything not done by then is lost).

use std::time::Duration;

use agora_testkit::stable_port;
use tokio::io::AsyncWriteExt;

use crate::process::Proc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_stops_within_its_grace_period_despite_a_stalled_client() {
    let dir = agora_testkit::tempdir().unwrap();
    let port = stable_port();
    let env = vec![("AGORA_GATEWAY_SHUTDOWN_GRACE_MS".to_owned(), "2000".to_owned())];
    let data = dir.0.join("data");
    let mut dev = Proc::new(
        "agora-dev",
        &["dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()],
        &env,
        &dir.0,
    );
    dev.start();
    dev.wait_ready(&format!("http://127.0.0.1:{port}/readyz")).await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"POST /api/v1/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nclient_name=half")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::task::spawn_blocking(move || {
        let r = dev.terminate(Duration::from_secs(15));
        (r, dev.log_tail())
    })
    .await
    .unwrap();
    match stopped {
        (Some((took, clean)), log) => {
            assert!(clean, "agora dev did not exit cleanly:\n{log}");
            assert!(took < Duration::from_secs(8), "agora dev took {took:?} to stop:\n{log}");
        }
        (None, log) => panic!("agora dev still running 15 s after SIGTERM:\n{log}"),
    }
    drop(stalled);
}
