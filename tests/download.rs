#![cfg(feature = "download")]
//! The `download` feature against a local HTTP server on 127.0.0.1 and `file://` URLs: fetch and
//! verify, cache hits, checksum / size mismatches, truncated transfers, unreachable servers (and
//! their manual instructions), safe zip extraction. Only loopback addresses are ever contacted.
//!
//! `cargo test --release --features download --test download`

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use transfer_vision::weights::download::{
    DownloadError, HYMENOPTERA_URL, ONNX_ZOO_BASE, Pretrained, cache_dir_from, extract_zip,
    fetch_url, fetch_zip_folder, manual_instructions, sha256_file,
};
use zip::write::SimpleFileOptions;

/// How the test server answers.
#[derive(Clone, Copy)]
enum Mode {
    /// 200 with the whole body.
    Full,
    /// 200 announcing the whole body, but only half of it is sent before the connection closes.
    Truncated,
    /// 404 Not Found.
    NotFound,
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 serving one fixed body. It answers at most
/// `MAX_REQUESTS` requests, gives up after `LIFETIME`, and stops when dropped.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const MAX_REQUESTS: usize = 8;
const LIFETIME: Duration = Duration::from_secs(30);

impl Server {
    fn start(body: Vec<u8>, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            while !s.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && h.load(Ordering::SeqCst) < MAX_REQUESTS
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = answer(stream, &body, mode);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: TcpStream, body: &[u8], mode: Mode) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Read the request head (bounded).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    match mode {
        Mode::NotFound => {
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
        Mode::Full | Mode::Truncated => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            let sent = match mode {
                Mode::Truncated => &body[..body.len() / 2],
                _ => body,
            };
            stream.write_all(sent)?;
        }
    }
    stream.flush()?;
    // Dropping the stream closes the connection (early, for Truncated).
    Ok(())
}

/// Deterministic pseudo-random bytes.
fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names of everything in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[test]
fn pretrained_entries_match_the_zoo() {
    assert_eq!(ONNX_ZOO_BASE, "https://github.com/onnx/models/raw/main/");
    let m = Pretrained::MobileNetV2;
    assert_eq!(
        m.url(),
        "https://github.com/onnx/models/raw/main/validated/vision/classification/mobilenet/model/mobilenetv2-12.onnx"
    );
    assert_eq!(m.file_name(), "mobilenetv2-12.onnx");
    assert_eq!(m.size(), 13_964_571);
    assert_eq!(
        m.sha256(),
        "c0c3f76d93fa3fd6580652a45618618a220fced18babf65774ed169de0432ad5"
    );
    let r = Pretrained::ResNet18V1;
    assert_eq!(
        r.url(),
        "https://github.com/onnx/models/raw/main/validated/vision/classification/resnet/model/resnet18-v1-7.onnx"
    );
    assert_eq!(r.file_name(), "resnet18-v1-7.onnx");
    assert_eq!(r.size(), 46_820_737);
    assert_eq!(
        r.sha256(),
        "4e8f8653e7a2222b3904cc3fe8e304cd8b339ce1d05fd24688162f86fb6df52c"
    );
    assert_eq!(Pretrained::ALL.len(), 2);
    assert_eq!(
        HYMENOPTERA_URL,
        "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
    );
}

#[test]
fn cache_dir_precedence() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let all: &'static [(&str, &str)] = &[
        ("TRANSFER_VISION_HOME", "/models"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(
        cache_dir_from(env(all), true).unwrap(),
        PathBuf::from("/models")
    );
    let no_home: &'static [(&str, &str)] = &[
        ("TRANSFER_VISION_HOME", ""),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(
        cache_dir_from(env(no_home), true).unwrap(),
        PathBuf::from("weights")
    );
    assert_eq!(
        cache_dir_from(env(no_home), false).unwrap(),
        PathBuf::from("/xdg/transfer-vision")
    );
    let home_only: &'static [(&str, &str)] = &[("HOME", "/home/u")];
    assert_eq!(
        cache_dir_from(env(home_only), false).unwrap(),
        PathBuf::from("/home/u/.cache/transfer-vision")
    );
    let nothing: &'static [(&str, &str)] = &[];
    let err = cache_dir_from(env(nothing), false).unwrap_err();
    assert!(matches!(err, DownloadError::NoCacheDir));
    assert!(err.to_string().contains("TRANSFER_VISION_HOME"), "{err}");
}

#[test]
fn http_fetch_verifies_and_writes_atomically() {
    let data = body(300_000, 1);
    let server = Server::start(data.clone(), Mode::Full);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub").join("model.onnx");
    let url = server.url("model.onnx");
    let got = fetch_url(&url, &dest, Some((data.len() as u64, &sha(&data)))).unwrap();
    assert!(got.downloaded);
    assert_eq!(got.path, dest);
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(got.sha256, sha(&data));
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(sha256_file(&dest).unwrap(), sha(&data));
    // No temporary file left next to it.
    assert_eq!(listing(dest.parent().unwrap()), vec!["model.onnx"]);
    assert_eq!(server.hits(), 1);

    // Without an expected checksum the file is transferred and its hash reported.
    let other = dir.path().join("unpinned.bin");
    let got = fetch_url(&url, &other, None).unwrap();
    assert!(got.downloaded);
    assert_eq!(got.sha256, sha(&data));
    assert_eq!(server.hits(), 2);
}

#[test]
fn cached_file_is_not_downloaded_again() {
    let data = body(100_000, 2);
    let server = Server::start(data.clone(), Mode::Full);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("resnet18-v1-7.onnx");
    let url = server.url("resnet18-v1-7.onnx");
    let expected = (data.len() as u64, sha(&data));
    let first = fetch_url(&url, &dest, Some((expected.0, &expected.1))).unwrap();
    assert!(first.downloaded);
    assert_eq!(server.hits(), 1);
    // Upper-case hex is accepted too.
    let upper = expected.1.to_uppercase();
    for _ in 0..3 {
        let again = fetch_url(&url, &dest, Some((expected.0, &upper))).unwrap();
        assert!(!again.downloaded);
        assert_eq!(again.sha256, expected.1);
    }
    assert_eq!(server.hits(), 1, "a cache hit must not contact the server");

    // A damaged cached copy (same size, other bytes) is fetched again and repaired.
    let mut damaged = data.clone();
    damaged[10] ^= 0xff;
    fs::write(&dest, &damaged).unwrap();
    let repaired = fetch_url(&url, &dest, Some((expected.0, &expected.1))).unwrap();
    assert!(repaired.downloaded);
    assert_eq!(server.hits(), 2);
    assert_eq!(fs::read(&dest).unwrap(), data);
}

#[test]
fn wrong_checksum_is_refused_and_keeps_the_previous_file() {
    let served = body(50_000, 3);
    let wanted = body(50_000, 4);
    let server = Server::start(served.clone(), Mode::Full);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("mobilenetv2-12.onnx");
    fs::write(&dest, b"previous good file").unwrap();
    let url = server.url("mobilenetv2-12.onnx");
    let err = fetch_url(&url, &dest, Some((wanted.len() as u64, &sha(&wanted)))).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DownloadError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&sha(&wanted)), "expected hash missing: {msg}");
    assert!(msg.contains(&sha(&served)), "actual hash missing: {msg}");
    assert_eq!(fs::read(&dest).unwrap(), b"previous good file");
    assert_eq!(listing(dir.path()), vec!["mobilenetv2-12.onnx"]);

    // Without a previous file, nothing at all is left.
    let fresh = dir.path().join("fresh.onnx");
    let err = fetch_url(&url, &fresh, Some((wanted.len() as u64, &sha(&wanted)))).unwrap_err();
    assert!(matches!(err, DownloadError::ChecksumMismatch { .. }));
    assert!(!fresh.exists());
    assert_eq!(listing(dir.path()), vec!["mobilenetv2-12.onnx"]);
}

#[test]
fn wrong_size_is_refused() {
    let served = body(40_000, 5);
    let server = Server::start(served.clone(), Mode::Full);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.onnx");
    let url = server.url("model.onnx");
    let err = fetch_url(&url, &dest, Some((39_999, &sha(&served)))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::SizeMismatch { .. }), "{err:?}");
    assert!(
        msg.contains(&url) && msg.contains("39999") && msg.contains("40000"),
        "{msg}"
    );
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn truncated_response_leaves_nothing() {
    let data = body(200_000, 6);
    let server = Server::start(data.clone(), Mode::Truncated);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.onnx");
    let url = server.url("model.onnx");
    let err = fetch_url(&url, &dest, Some((data.len() as u64, &sha(&data)))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Incomplete { .. }), "{err:?}");
    assert!(msg.contains(&url), "{msg}");
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // Also without an expected checksum: the announced length is enforced.
    let err = fetch_url(&url, &dest, None).unwrap_err();
    assert!(matches!(err, DownloadError::Incomplete { .. }), "{err:?}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn http_error_status_names_the_url() {
    let server = Server::start(Vec::new(), Mode::NotFound);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.onnx");
    let url = server.url("missing.onnx");
    let err = fetch_url(&url, &dest, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DownloadError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&url) && msg.contains("404"), "{msg}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn unreachable_server_says_how_to_get_the_file_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("mobilenetv2-12.onnx");
    let url = format!(
        "http://127.0.0.1:{}/validated/mobilenetv2-12.onnx",
        closed_port()
    );
    let m = Pretrained::MobileNetV2;
    let err = fetch_url(&url, &dest, Some((m.size(), m.sha256()))).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, DownloadError::Unreachable { .. }), "{err:?}");
    assert!(msg.starts_with(&format!("cannot reach {url}")), "{msg}");
    for needle in [
        url.as_str(),
        &dest.display().to_string(),
        m.sha256(),
        "sha256sum",
        "13964571",
        "weights/export_torchvision.py",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert_eq!(
        msg.matches(&manual_instructions(
            &url,
            &dest,
            Some((m.size(), m.sha256()))
        ))
        .count(),
        1
    );
    assert!(listing(dir.path()).is_empty());

    // The data set's instructions say where to unzip it, and that no checksum is pinned.
    let url = format!(
        "http://127.0.0.1:{}/tutorial/hymenoptera_data.zip",
        closed_port()
    );
    let err = fetch_zip_folder(&url, dir.path(), "hymenoptera_data").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, DownloadError::Unreachable { .. }), "{err:?}");
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("no checksum is pinned"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("hymenoptera_data").display().to_string()),
        "{msg}"
    );
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn file_urls_are_copied_and_verified() {
    let data = body(70_000, 7);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source dir").join("model.onnx");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    fs::write(&src, &data).unwrap();
    let out = dir.path().join("cache");
    let dest = out.join("model.onnx");
    let url = format!("file://{}", src.display().to_string().replace(' ', "%20"));
    let got = fetch_url(&url, &dest, Some((data.len() as u64, &sha(&data)))).unwrap();
    assert!(got.downloaded);
    assert_eq!(fs::read(&dest).unwrap(), data);
    let again = fetch_url(&url, &dest, Some((data.len() as u64, &sha(&data)))).unwrap();
    assert!(!again.downloaded);

    // Wrong checksum: error naming both hashes, previous file untouched, nothing else left.
    let wrong = sha(b"something else");
    let err = fetch_url(&url, &dest, Some((data.len() as u64, &wrong))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains(&wrong) && msg.contains(&sha(&data)),
        "{msg}"
    );
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(listing(&out), vec!["model.onnx"]);

    // A missing source is "cannot reach", with the instructions.
    let missing = file_url(&dir.path().join("nope.onnx"));
    let err = fetch_url(&missing, &out.join("nope.onnx"), None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Unreachable { .. }), "{err:?}");
    assert!(
        msg.contains(&missing) && msg.contains("no checksum is pinned"),
        "{msg}"
    );

    // Unsupported schemes and relative file URLs are refused, naming the URL.
    for url in ["ftp://127.0.0.1/x", "file://relative/x", "not a url"] {
        let err = fetch_url(url, &out.join("x"), None).unwrap_err();
        assert!(
            matches!(err, DownloadError::UnsupportedUrl { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(url));
    }
    assert_eq!(listing(&out), vec!["model.onnx"]);
}

/// Writes a zip with the given (name, contents) entries (deflated); names ending in `/` are
/// folders.
fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let file = fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, opts).unwrap();
        } else {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
    }
    zip.finish().unwrap();
}

#[test]
fn zip_with_parent_dir_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("evil.zip");
    make_zip(
        &archive,
        &[
            ("hymenoptera_data/train/ants/a.jpg", b"fine"),
            ("../evil.txt", b"escaped"),
        ],
    );
    let dest = dir.path().join("a").join("out");
    let err = extract_zip(&archive, &dest).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DownloadError::UnsafeZipEntry { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("../evil.txt") && msg.contains("evil.zip"),
        "{msg}"
    );
    assert!(!dir.path().join("a").join("evil.txt").exists());
    assert!(!dir.path().join("evil.txt").exists());
    // Checked before anything is written.
    assert!(!dest.exists());

    for name in ["/abs.txt", "ok/../../up.txt", "..\\win.txt", "C:/drive.txt"] {
        let archive = dir.path().join("bad.zip");
        make_zip(&archive, &[(name, b"x")]);
        let err = extract_zip(&archive, &dest).unwrap_err();
        assert!(
            matches!(err, DownloadError::UnsafeZipEntry { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
    }
    assert!(!dest.exists());

    // Random bytes are a zip error naming the file, not a panic.
    let junk = dir.path().join("junk.zip");
    fs::write(&junk, body(1000, 8)).unwrap();
    let err = extract_zip(&junk, &dest).unwrap_err();
    assert!(matches!(err, DownloadError::Zip { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.zip"));
}

#[test]
fn zip_folder_is_fetched_extracted_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("served");
    fs::create_dir_all(&src).unwrap();
    let archive = src.join("hymenoptera_data.zip");
    let image = body(5_000, 9);
    make_zip(
        &archive,
        &[
            ("hymenoptera_data/", b""),
            ("hymenoptera_data/train/ants/1.jpg", &image),
            ("hymenoptera_data/train/bees/2.jpg", b"bee"),
            ("hymenoptera_data/val/ants/3.jpg", b"ant"),
            ("hymenoptera_data/val/bees/4.jpg", b"bee 2"),
        ],
    );
    let zip_bytes = fs::read(&archive).unwrap();
    let server = Server::start(zip_bytes, Mode::Full);
    let cache = dir.path().join("cache");
    let url = server.url("tutorial/hymenoptera_data.zip");
    let got = fetch_zip_folder(&url, &cache, "hymenoptera_data").unwrap();
    assert_eq!(got, cache.join("hymenoptera_data"));
    assert_eq!(fs::read(got.join("train/ants/1.jpg")).unwrap(), image);
    assert_eq!(fs::read(got.join("val/bees/4.jpg")).unwrap(), b"bee 2");
    // The downloaded archive and the staging folder are gone.
    assert_eq!(listing(&cache), vec!["hymenoptera_data"]);
    assert_eq!(server.hits(), 1);

    // Present: returned without contacting the server.
    let again = fetch_zip_folder(&url, &cache, "hymenoptera_data").unwrap();
    assert_eq!(again, got);
    assert_eq!(server.hits(), 1);

    // An archive put there by hand is extracted without a download (and kept).
    let manual = dir.path().join("manual");
    fs::create_dir_all(&manual).unwrap();
    fs::copy(&archive, manual.join("hymenoptera_data.zip")).unwrap();
    let unreachable = format!("http://127.0.0.1:{}/x.zip", closed_port());
    let got = fetch_zip_folder(&unreachable, &manual, "hymenoptera_data").unwrap();
    assert!(got.join("val/ants/3.jpg").is_file());
    assert_eq!(
        listing(&manual),
        vec!["hymenoptera_data", "hymenoptera_data.zip"]
    );

    // An archive without the expected top-level folder is an error, and leaves no folder.
    let wrong = dir.path().join("wrong");
    fs::create_dir_all(&wrong).unwrap();
    make_zip(&wrong.join("data.zip"), &[("other/x.jpg", b"x")]);
    let err = fetch_zip_folder(&file_url(&wrong.join("nothing.zip")), &wrong, "data");
    // (the archive is already there, so the URL is not used)
    let err = err.unwrap_err();
    assert!(matches!(err, DownloadError::Zip { .. }), "{err:?}");
    assert!(err.to_string().contains("data/"), "{err}");
    assert_eq!(listing(&wrong), vec!["data.zip"]);
}

#[test]
fn offline_instructions_for_the_zoo_entries() {
    for entry in Pretrained::ALL {
        let dest = Path::new("weights").join(entry.file_name());
        let how = manual_instructions(&entry.url(), &dest, Some((entry.size(), entry.sha256())));
        println!("{how}");
        for needle in [
            entry.url().as_str(),
            "weights/",
            entry.file_name(),
            entry.sha256(),
            &entry.size().to_string(),
            "sha256sum",
            "weights/export_torchvision.py",
        ] {
            assert!(how.contains(needle), "{needle:?} missing from: {how}");
        }
    }
}

/// A small PNG.
fn png(shade: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([shade, 90, 200]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

#[test]
fn ants_bees_without_flags_fetches_its_data_and_verifies_its_weights() {
    use transfer_vision::weights::download::{HOME_ENV, HYMENOPTERA_URL_ENV, ZOO_BASE_ENV};
    let Some(bin) = common::example_binary("ants_bees") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hymenoptera_data.zip");
    let (ant, bee) = (png(10), png(240));
    make_zip(
        &archive,
        &[
            ("hymenoptera_data/train/ants/1.png", &ant),
            ("hymenoptera_data/train/bees/2.png", &bee),
            ("hymenoptera_data/val/ants/3.png", &ant),
            ("hymenoptera_data/val/bees/4.png", &bee),
        ],
    );
    let data_server = Server::start(fs::read(&archive).unwrap(), Mode::Full);
    // A "mirror" whose ResNet18 is not the zoo's file: it must be refused.
    let zoo_server = Server::start(body(4_096, 3), Mode::Full);
    let run = dir.path().join("cwd");
    fs::create_dir_all(&run).unwrap();
    let out = std::process::Command::new(&bin)
        .current_dir(&run)
        .env(HYMENOPTERA_URL_ENV, data_server.url("hymenoptera_data.zip"))
        .env(ZOO_BASE_ENV, zoo_server.url(""))
        .env(HOME_ENV, dir.path().join("cache"))
        .args(["--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The data was fetched and extracted where the example looks for it...
    for file in [
        "train/ants/1.png",
        "train/bees/2.png",
        "val/ants/3.png",
        "val/bees/4.png",
    ] {
        assert!(
            run.join("data/hymenoptera_data").join(file).is_file(),
            "{file}"
        );
    }
    assert_eq!(data_server.hits(), 1);
    // ...and the weights were downloaded from the mirror, checked, and refused.
    assert!(zoo_server.hits() >= 1);
    assert!(
        stderr.contains("resnet18-v1-7.onnx") && stderr.contains("discarded"),
        "{stderr}"
    );
    assert!(!dir.path().join("cache/resnet18-v1-7.onnx").exists());

    // Offline: the same clear message as before, saying how to get the files by hand.
    let offline = dir.path().join("offline");
    fs::create_dir_all(&offline).unwrap();
    let port = closed_port();
    let out = std::process::Command::new(&bin)
        .current_dir(&offline)
        .env(
            HYMENOPTERA_URL_ENV,
            format!("http://127.0.0.1:{port}/hymenoptera_data.zip"),
        )
        .env(HOME_ENV, dir.path().join("cache"))
        .args(["--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("hymenoptera_data"),
        "{stderr}"
    );
    assert!(!offline.join("data/hymenoptera_data").exists());
}
