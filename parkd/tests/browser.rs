//! The live map in a real browser: Debian's Chromium driven by Playwright (`playwright-core`,
//! web/tests/live-map.mjs) against the whole product, with sensor messages published by
//! `mosquitto_pub`. The script checks that a published reading recolours its spot, the
//! vehicle filter, the phone layout and the absence of console errors.
//!
//! Needs `node`, `web/node_modules` (`npm ci --prefix web`, done by scripts/test) and
//! `chromium` (Debian package; .ci/run installs it). Missing pieces fail the test with the
//! command that fixes them: a browser test that silently skips proves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use parkd::app::{Mode, RunningApp};
use parkd::config::ParkdConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_reading_recolours_its_spot_on_the_live_map() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run `npm ci --prefix web` (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does) or set CHROMIUM"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = ParkdConfig {
        data_dir: dir.path().to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    // The demo garage and its sensors, seeded as `parkd demo` does, but without the simulator:
    // the spot under test changes only when the test says so.
    config.demo.simulate = false;
    config.ingest.batch_interval_ms = 10;
    config.live.debounce_ms = 0;
    let store = parkd::app::open_store(&config).await.unwrap();
    let lot = parkd_core::ids::LotId::parse(&config.demo.lot).unwrap();
    store
        .put_lot(&parkd::app::demo_lot(&lot, config.demo.spots))
        .await
        .unwrap();
    parkd::devices::seed_demo_sensors(store.as_ref(), &lot, config.demo.spots)
        .await
        .unwrap();
    drop(store);
    let app = RunningApp::start(config, Mode::Demo).await.unwrap();
    let mqtt = app.mqtt_addr().unwrap();
    let screenshot = std::env::var("PARKD_SCREENSHOT").ok();

    let mut command = tokio::process::Command::new("node");
    command
        .arg("tests/live-map.mjs")
        .current_dir(&web)
        .env("PARKD_URL", format!("http://{}", app.http_addr()))
        .env("PARKD_MQTT_HOST", mqtt.ip().to_string())
        .env("PARKD_MQTT_PORT", mqtt.port().to_string())
        .env("PARKD_LOT", lot.as_str())
        .env("PARKD_SPOT", "L1-030")
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    if let Some(path) = &screenshot {
        command.env("PARKD_SCREENSHOT", path);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser test finishes within 120 s")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "live-map.mjs failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    app.shutdown().await.unwrap();
}
