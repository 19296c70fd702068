//! HTTP/1.1 load generator for the list-latency step of `bench/run`: a fixed number of
//! keep-alive clients, each sending GETs back to back, reporting latency percentiles as JSON.
//!
//! Standard library only, so the harness compiles it with a plain `rustc -O` (no Cargo
//! project, no download). A Python client could not keep 64 connections busy fast enough:
//! its own overhead would be measured instead of the server's.
//!
//! Usage: loadgen HOST:PORT PATH CLIENTS WARMUP_SECS SECS [HEADER: VALUE]...

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct ClientResult {
    latencies_us: Vec<u64>,
    errors: u64,
    non_200: u64,
    bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: loadgen HOST:PORT PATH CLIENTS WARMUP_SECS SECS [HEADER: VALUE]...");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let path = args[2].clone();
    let clients: usize = args[3].parse().expect("CLIENTS");
    let warmup = Duration::from_secs_f64(args[4].parse().expect("WARMUP_SECS"));
    let run = Duration::from_secs_f64(args[5].parse().expect("SECS"));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for header in &args[6..] {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = Arc::new(request.into_bytes());

    let start = Arc::new(Barrier::new(clients + 1));
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            let (start, recording, stop) = (start.clone(), recording.clone(), stop.clone());
            std::thread::spawn(move || client(&addr, &request, &start, &recording, &stop))
        })
        .collect();
    start.wait();
    std::thread::sleep(warmup);
    recording.store(true, Ordering::SeqCst);
    let began = Instant::now();
    std::thread::sleep(run);
    recording.store(false, Ordering::SeqCst);
    let elapsed = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);

    let mut all = Vec::new();
    let (mut errors, mut non_200, mut bytes) = (0, 0, 0);
    for handle in handles {
        let r = handle.join().expect("client thread");
        all.extend(r.latencies_us);
        errors += r.errors;
        non_200 += r.non_200;
        bytes += r.bytes;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * all.len() as f64).ceil() as usize;
        all[i.clamp(1, all.len()) - 1] as f64 / 1000.0
    };
    println!(
        "{{\"clients\": {clients}, \"requests\": {}, \"errors\": {errors}, \"non_200\": {non_200}, \
         \"seconds\": {elapsed:.3}, \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \
         \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"mean_body_bytes\": {}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0),
        if all.is_empty() { 0 } else { bytes / all.len() as u64 },
    );
}

fn client(
    addr: &str,
    request: &[u8],
    start: &Barrier,
    recording: &AtomicBool,
    stop: &AtomicBool,
) -> ClientResult {
    let mut result = ClientResult { latencies_us: Vec::new(), errors: 0, non_200: 0, bytes: 0 };
    let mut conn = connect(addr);
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        let Some(stream) = conn.as_mut() else {
            result.errors += 1;
            std::thread::sleep(Duration::from_millis(10));
            conn = connect(addr);
            continue;
        };
        let sent = Instant::now();
        match exchange(stream, request) {
            Ok((status, body, keep_alive)) => {
                let took = sent.elapsed().as_micros() as u64;
                if recording.load(Ordering::Relaxed) {
                    result.latencies_us.push(took);
                    result.bytes += body;
                    if status != 200 {
                        result.non_200 += 1;
                    }
                }
                if !keep_alive {
                    conn = connect(addr);
                }
            }
            Err(_) => {
                if recording.load(Ordering::Relaxed) {
                    result.errors += 1;
                }
                conn = connect(addr);
            }
        }
    }
    result
}

fn connect(addr: &str) -> Option<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    Some(BufReader::with_capacity(256 * 1024, stream))
}

/// Sends one request and reads the whole response; returns status, body length, keep-alive.
fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, u64, bool)> {
    stream.get_mut().write_all(request)?;
    let mut line = String::new();
    read_line(stream, &mut line)?;
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let (mut length, mut chunked, mut keep_alive) = (None, false, true);
    loop {
        read_line(stream, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(bad)?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<u64>().map_err(|_| bad())?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        let mut total = 0;
        loop {
            read_line(stream, &mut line)?;
            let size_text = line.trim_end().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16).map_err(|_| bad())?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    read_line(stream, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break total;
            }
            skip(stream, size)?;
            skip(stream, 2)?;
            total += size;
        }
    } else {
        let n = length.unwrap_or(0);
        skip(stream, n)?;
        n
    };
    Ok((status, body, keep_alive))
}

fn read_line(stream: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<()> {
    line.clear();
    if stream.read_line(line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn skip(stream: &mut BufReader<TcpStream>, n: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut stream.by_ref().take(n), &mut std::io::sink())?;
    if copied != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn bad() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed response")
}
