//! Runs nectar-load against a real nectar: 2 associations, 50 instances.
//!
//! nectar is taken from `$NECTAR_BIN`, or `../target/release/nectar` next to
//! this crate (build it with `cargo build --release -p nectar-engine`); the
//! test prints a note and passes when it is missing. The template is
//! pydicom's CT_small.dcm when it can be found (`$NECTAR_TEST_FILES` or
//! `python3`), otherwise a synthetic CT image. No timing is asserted.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nectar_bench::synthetic;

fn nectar_bin() -> Option<PathBuf> {
    let path = match std::env::var_os("NECTAR_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/nectar"),
    };
    path.is_file().then_some(path)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills nectar if the test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn template(dir: &Path) -> PathBuf {
    if let Some(ct) = nectar_bench::pydicom_test_files().map(|d| d.join("CT_small.dcm")) {
        if ct.is_file() {
            return ct;
        }
    }
    eprintln!("CT_small.dcm not found; using a synthetic CT image as the template");
    let ds = synthetic::ct_dataset(true, 64 * 64 * 2);
    let path = dir.join("synthetic-ct.dcm");
    std::fs::write(
        &path,
        synthetic::part10(
            &ds,
            synthetic::CT_IMAGE_STORAGE,
            "1.2.3.4.5.6.7.8.9",
            synthetic::EXPLICIT_VR_LE,
        ),
    )
    .unwrap();
    path
}

#[test]
fn stores_50_instances_over_2_associations() {
    let Some(nectar) = nectar_bin() else {
        eprintln!(
            "SKIPPED: nectar binary not found (set NECTAR_BIN or run \
             `cargo build --release -p nectar-engine`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let template = template(dir.path());

    // Ports are picked free, then released for nectar to bind; retry on the
    // rare race with another process taking one.
    let mut started = None;
    for _ in 0..3 {
        let (dimse, http) = (free_port(), free_port());
        let mut server = Server(
            Command::new(&nectar)
                .args(["serve", "--data-dir"])
                .arg(&data)
                .args(["--bind", "127.0.0.1", "--dimse-port"])
                .arg(dimse.to_string())
                .arg("--http-port")
                .arg(http.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nectar"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = loop {
            if TcpStream::connect(("127.0.0.1", dimse)).is_ok() {
                break true;
            }
            if server.0.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if up {
            started = Some((server, dimse));
            break;
        }
        let mut log = String::new();
        if let Some(mut e) = server.0.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        eprintln!("nectar did not come up on port {dimse}:\n{log}");
    }
    let (mut server, port) = started.expect("nectar listening");

    let out = Command::new(env!("CARGO_BIN_EXE_nectar-load"))
        .args(["--port", &port.to_string()])
        .args(["--associations", "2", "--instances", "50", "--studies", "3"])
        .arg("--template")
        .arg(&template)
        .args(["--timeout", "30", "--json"])
        .output()
        .expect("run nectar-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "nectar-load exited {:?}", out.status);
    for field in [
        "\"ok\":true",
        "\"associations_established\":2",
        "\"sent\":50",
        "\"successes\":50",
        "\"failures\":0",
    ] {
        assert!(stdout.contains(field), "{field} missing from {stdout}");
    }

    // Stop nectar (SIGTERM: it flushes and exits 0) and check what it stored.
    // SAFETY: plain kill(2) on the pid of a child we own and have not reaped.
    assert_eq!(
        unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "nectar did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "nectar exited {status:?}");
    let fsck = Command::new(&nectar)
        .args(["fsck", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run nectar fsck");
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "fsck: {report}");
    assert!(report.contains("\"instances\":50"), "fsck: {report}");
}
