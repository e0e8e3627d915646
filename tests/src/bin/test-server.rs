//! A small HTTP/1.1 server for the privileged tests, with a response pattern the tests can
//! predict exactly: one `write` per response (headers and body together), keep-alive unless
//! the request says `Connection: close`.
//!
//! Usage: `test-server ADDR...` (e.g. `127.0.0.1:0 [::1]:0`). Prints one line per listener,
//! `listening ADDR`, then serves until killed.
//!
//! Routes: any path with a `bytes=N` query parameter answers N bytes; `GET /bytes/N` answers
//! N bytes; `GET /file/PATH` answers the file's content (read with `read()` from disk at each
//! request); anything else answers `ok`. A `Content-Length` body is read first.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    thread,
};

fn main() {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    assert!(!addrs.is_empty(), "usage: test-server ADDR...");
    let mut handles = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        println!("listening {}", listener.local_addr().expect("local addr"));
        handles.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || serve(stream));
            }
        }));
    }
    std::io::stdout().flush().expect("flush stdout");
    for h in handles {
        let _ = h.join();
    }
}

fn serve(stream: TcpStream) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if lower == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let sized = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("bytes="))
            .and_then(|n| n.parse::<usize>().ok());
        let payload: Vec<u8> = if let Some(n) = sized {
            vec![b'y'; n]
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            vec![b'x'; n.parse().unwrap_or(0)]
        } else if let Some(file) = path.strip_prefix("/file") {
            std::fs::read(file).unwrap_or_default()
        } else {
            b"ok".to_vec()
        };
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{}\r\n",
            payload.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        response.extend_from_slice(&payload);
        // One write call per response: blocking TCP sockets send it all or fail.
        if writer.write_all(&response).is_err() || close {
            return;
        }
    }
}
