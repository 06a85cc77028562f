//! The first admin is created with the real binary's CLI, then logs in over HTTP to the
//! running product at OWASP-strength Argon2 (the production default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use parkd::app::{Mode, RunningApp};
use parkd::config::ParkdConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_an_admin_who_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "admin",
            "create-user",
            "--email",
            "Root@Example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"keys to the whole garage\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("root@example.com (admin)"), "{stdout}");

    // A weak password is refused with the reason.
    let weak = Command::new(env!("CARGO_BIN_EXE_parkd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "admin",
            "create-user",
            "--email",
            "b@example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut weak = weak;
    weak.stdin
        .take()
        .unwrap()
        .write_all(b"password1234\n")
        .unwrap();
    let weak = weak.wait_with_output().unwrap();
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too easy to guess"));

    let mut config = ParkdConfig {
        data_dir: dir.path().to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    config.demo.simulate = false;
    let app = RunningApp::start(config, Mode::Serve).await.unwrap();
    let body = r#"{"email":"root@example.com","password":"keys to the whole garage"}"#;
    let mut stream = tokio::net::TcpStream::connect(app.http_addr())
        .await
        .unwrap();
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""role":"admin""#), "{response}");
    app.shutdown().await.unwrap();
}
