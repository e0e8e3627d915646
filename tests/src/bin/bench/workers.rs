//! The measured workloads, each in its own process (`bench worker NAME ARGS`): each prints
//! its figure and the number of operations it did, or (the `conns` holder) a line when its
//! connections are open.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use homeserver_sensor_tests::synapse_token;

use crate::overhead::{REQUEST_PATH, TOKEN};

/// What the capacity generator's server answers each request head with.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

pub fn worker(args: &[String]) {
    let n = |i: usize| -> u64 { args[i].parse().expect("count") };
    match args[0].as_str() {
        "read-zero" => print_ns_per_op(n(1), syscall_loop(n(1), "/dev/zero", false)),
        "write-null" => print_ns_per_op(n(1), syscall_loop(n(1), "/dev/null", true)),
        "pingpong" => pingpong(n(1)),
        "stream" => {
            let size: usize = args[1].parse().expect("size");
            stream(size, n(2), &args[3]);
        }
        "http" => http_keepalive(n(1), &args[2]),
        "responder" => responder(n(1) as usize, args[2] == "round-robin", n(3) as usize),
        "heads" => heads(n(1), n(2), n(3) as usize, &args[4], n(5) as usize),
        "conns" => conns(n(1) as usize, &args[2], n(3) as usize),
        "sender" => sender(n(1), n(2)),
        other => panic!("unknown worker {other}"),
    }
}

fn pingpong(count: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b).expect("echo");
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut b = [1u8; 1];
    let start = Instant::now();
    for _ in 0..count {
        c.write_all(&b).expect("ping");
        c.read_exact(&mut b).expect("pong");
    }
    let elapsed = start.elapsed();
    drop(c);
    let _ = echo.join();
    print_ns_per_op(count, elapsed.as_nanos() as f64);
}

fn stream(size: usize, total: u64, sink: &str) {
    let mut c = TcpStream::connect(sink).expect("connect sink");
    let buf = vec![0x5au8; size];
    let mut sent = 0u64;
    let mut writes = 0u64;
    let start = Instant::now();
    while sent < total {
        c.write_all(&buf).expect("send");
        sent += size as u64;
        writes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.1} {writes}", sent as f64 / secs / 1e6);
}

fn http_keepalive(count: u64, server: &str) {
    let mut c = TcpStream::connect(server).expect("connect server");
    c.set_nodelay(true).expect("nodelay");
    // A request as Synapse receives it from a client with a token: about 250 bytes.
    let req = format!(
        "GET {REQUEST_PATH} HTTP/1.1\r\nHost: matrix.example.org\r\nUser-Agent: bench\r\nAccept: application/json\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for _ in 0..count {
        c.write_all(req.as_bytes()).expect("request");
        // The response: a fixed head and 100 bytes; read until both are in.
        let mut got = 0;
        while got < 180 {
            let k = c.read(&mut buf).expect("response");
            assert!(k > 0, "server closed");
            got += k;
        }
    }
    println!(
        "{:.1} {count}",
        count as f64 / start.elapsed().as_secs_f64()
    );
}

/// Request heads as nginx forwards them to Synapse (about 330 bytes): `tokens` users,
/// each with its own token, reading rooms' history from 250 client addresses.
pub fn forwarded_heads(tokens: usize) -> Vec<Vec<u8>> {
    (0..tokens)
        .map(|i| {
            let token = synapse_token(&format!("user{i}"), "benchBenchBenchBenchBe");
            format!(
                "GET /_matrix/client/v3/rooms/%21room{}%3Atest.example/messages?dir=b&limit=10 HTTP/1.1\r\n\
                 X-Forwarded-For: 203.0.113.{}\r\nX-Forwarded-Proto: https\r\nHost: matrix.test.example:443\r\n\
                 User-Agent: Mozilla/5.0 Element/1.11\r\nAccept: application/json\r\n\
                 Authorization: Bearer {token}\r\n\r\n",
                i % 97,
                i % 250 + 1
            )
            .into_bytes()
        })
        .collect()
}

/// The server side of the capacity and memory workloads, in the watched cgroup, on CPU 0:
/// prints `listening ADDR`, accepts `conns` connections, then answers each request head
/// with a small response. `round_robin`: serve the connections in turn, one head each (the
/// capacity generator drives them in lockstep); otherwise serve each connection's
/// `per_conn` heads as soon as it is accepted, then keep it open (the memory holder).
fn responder(conns: usize, round_robin: bool, per_conn: usize) {
    pin_to_cpu(0);
    raise_nofile(conns as u64 + 1024);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("listening {}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().expect("flush");
    let mut buf = vec![0u8; 8192];
    let mut open = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        if !round_robin {
            for _ in 0..per_conn {
                if !answer_head(&mut s, &mut buf) {
                    break;
                }
            }
        }
        open.push(s);
    }
    if !round_robin {
        // Keep them open until killed.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    loop {
        for s in open.iter_mut() {
            if !answer_head(s, &mut buf) {
                return;
            }
        }
    }
}

/// Reads one request head (the client writes each in one piece) and answers it; false at
/// the end of the connection.
fn answer_head(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut len = 0;
    while len < 4 || &buf[len - 4..len] != b"\r\n\r\n" {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
    }
    s.write_all(RESPONSE).is_ok()
}

/// The agent-capacity generator, outside the watched cgroup, on CPU 0 (with the
/// responder): drives `conns` keep-alive connections to the responder in lockstep (a
/// request head on each, then each response) at `rate` heads per second (0: as fast as it
/// can) for `secs` seconds, with `tokens` distinct tokens in turn. Prints the rate achieved
/// and the heads sent.
fn heads(rate: u64, secs: u64, conns: usize, server: &str, tokens: usize) {
    pin_to_cpu(0);
    let mut clients: Vec<TcpStream> = (0..conns)
        .map(|_| {
            let c = TcpStream::connect(server).expect("connect");
            c.set_nodelay(true).expect("nodelay");
            c
        })
        .collect();
    let heads = forwarded_heads(tokens);
    let mut buf = vec![0u8; 4096];
    let mut sent = 0u64;
    let start = Instant::now();
    let stop = Duration::from_secs(secs);
    while start.elapsed() < stop {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&heads[(sent as usize + i) % heads.len()])
                .expect("send head");
        }
        for c in clients.iter_mut() {
            c.read_exact(&mut buf[..RESPONSE.len()])
                .expect("receive response");
        }
        sent += conns as u64;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.1} {sent}", sent as f64 / secs);
}

/// Opens `count` connections (numbered from `first`) to the responder from several loopback
/// source addresses (20,000 per address, within the ephemeral port range) and sends two
/// request heads on each, with one token for all (the first request then completes, the
/// second stays open, as on an idle keep-alive connection); prints `opened COUNT` and keeps
/// them open until killed.
fn conns(count: usize, server: &str, first: usize) {
    let addr = server.parse().expect("server address");
    let token = synapse_token("holder", "benchBenchBenchBenchBe");
    raise_nofile(count as u64 + 1024);
    let mut open = Vec::with_capacity(count);
    let mut buf = vec![0u8; 4096];
    for i in first..first + count {
        let from = Ipv4Addr::new(127, 1 + (i / 20_000) as u8, 0, 1);
        let mut c = connect_from(from, addr);
        let head = format!(
            "GET /_matrix/client/v3/rooms/%21r{}%3Atest.example/messages?dir=b&limit=10 HTTP/1.1\r\n\
             Host: matrix.test.example\r\nAuthorization: Bearer {token}\r\n\r\n",
            i % 1000
        );
        for _ in 0..2 {
            c.write_all(head.as_bytes()).expect("send head");
            c.read_exact(&mut buf[..RESPONSE.len()])
                .expect("receive response");
        }
        open.push(c);
        // At most 2,000 new connections a second: the agent's owner lookups scan /proc
        // and stall it for seconds on a host with this many sockets (see the report).
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    println!("opened {count}");
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A server of large responses for the single-transfer latency: for each connection,
/// reads a request head, answers `size` bytes in 64 KiB writes, and prints `crossed NS`:
/// CLOCK_MONOTONIC just before the write that takes the response past `threshold` bytes.
fn sender(threshold: u64, size: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("listening {}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().expect("flush");
    let chunk = vec![b'y'; 64 * 1024];
    for s in listener.incoming() {
        let mut s = s.expect("accept");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("read head");
            head.push(b[0]);
        }
        let response_head =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
        s.write_all(response_head.as_bytes()).expect("send head");
        let mut sent = response_head.len() as u64;
        let mut crossed = None;
        let mut body = 0u64;
        while body < size {
            let n = chunk.len().min((size - body) as usize);
            if crossed.is_none() && sent + n as u64 >= threshold {
                crossed = Some(crate::latency::monotonic_ns());
            }
            s.write_all(&chunk[..n]).expect("send body");
            sent += n as u64;
            body += n as u64;
        }
        drop(s);
        println!(
            "crossed {}",
            crossed.expect("the response crossed the threshold")
        );
        std::io::stdout().flush().expect("flush");
    }
}

/// Connects from the loopback address `from` with `IP_BIND_ADDRESS_NO_PORT`: the port is
/// chosen at connect time for the whole 4-tuple, instead of bind() searching for a port
/// free on that address (a search that grows with every connection open).
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    let sa = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own, with valid sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        let r = libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(
            r,
            0,
            "IP_BIND_ADDRESS_NO_PORT: {}",
            std::io::Error::last_os_error()
        );
        let local = sa(SocketAddrV4::new(from, 0));
        let r = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(r, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sa(to);
        let r = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(r, 0, "connect {to}: {}", std::io::Error::last_os_error());
        use std::os::fd::FromRawFd;
        TcpStream::from_raw_fd(fd)
    }
}

/// Pins the calling process (its threads started from now on too) to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get a valid
    // pointer and size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Raises the soft limit on open files to `n`; panics if the hard limit is lower (raising
/// it needs CAP_SYS_RESOURCE, which root lacks in some sandboxes: the memory workload
/// shards its connections over processes for that reason).
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
        assert!(
            lim.rlim_max >= n,
            "this process may open {} files, {n} needed",
            lim.rlim_max
        );
        lim.rlim_cur = n;
        let r = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(
            r,
            0,
            "setrlimit(RLIMIT_NOFILE, {n}): {}",
            std::io::Error::last_os_error()
        );
    }
}

fn syscall_loop(count: u64, path: &str, write: bool) -> f64 {
    let mut f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    let start = Instant::now();
    for _ in 0..count {
        if write {
            f.write_all(&b).expect("write");
        } else {
            f.read_exact(&mut b).expect("read");
        }
    }
    start.elapsed().as_nanos() as f64
}

fn print_ns_per_op(count: u64, ns: f64) {
    println!("{:.1} {count}", ns / count as f64);
}
