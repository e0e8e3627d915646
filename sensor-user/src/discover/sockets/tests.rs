//! Tests of the socket owner resolution: table parsing (captured lines and generated
//! ones), fake proc trees, and this process's own sockets in the real `/proc`.

use super::{
    SocketOwners, TcpEntry, TcpState, normalise, parse_addr, parse_tcp_line, parse_tcp_table,
};
use crate::discover::testutil::FakeProc;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Formats an address the way the kernel does, in this host's byte order.
fn hex(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// A table line for the given socket, in the kernel's layout.
fn line(slot: usize, local: &str, remote: &str, state: u8, inode: u64) -> String {
    format!(
        "{slot:4}: {} {} {state:02X} 00000000:00000000 00:00000000 00000000   108        0 \
         {inode} 1 0000000000000000 100 0 0 10 0",
        hex(sa(local)),
        hex(sa(remote))
    )
}

const HEADER4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
    retrnsmt   uid  timeout inode";

/// Lines captured from this machine's `/proc/net/tcp` and `tcp6` (x86_64).
#[cfg(target_endian = "little")]
#[test]
fn captured_lines() {
    let v4 = "   2: 0100007F:ED3C 0100007F:BBF7 01 00000000:00000000 00:00000000 00000000     \
              0        0 6627 2 00000000b7b63f9e 20 0 0 10 -1";
    let entry = parse_tcp_line(v4).expect("v4 line");
    assert_eq!(entry.local, sa("127.0.0.1:60732"));
    assert_eq!(entry.remote, sa("127.0.0.1:48119"));
    assert_eq!((entry.state, entry.inode), (TcpState::ESTABLISHED, 6627));

    let listen = "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     \
                  0        0 1215 1 00000000506869e7 100 0 0 10 0";
    let entry = parse_tcp_line(listen).expect("listen line");
    assert_eq!(
        (entry.local, entry.state),
        (sa("0.0.0.0:2024"), TcpState::LISTEN)
    );

    let v6 = "   3: 00000000000000000000000001000000:D87F 00000000000000000000000001000000:954E \
              01 00000000:00000000 00:00000000 00000000     0        0 6622 1 \
              000000004fa0e8bd 20 0 0 10 -1";
    let entry = parse_tcp_line(v6).expect("v6 line");
    assert_eq!(entry.local, sa("[::1]:55423"));
    assert_eq!(entry.remote, sa("[::1]:38222"));

    let mapped = "   2: 0000000000000000FFFF00000100007F:BBF7 0000000000000000FFFF00000100007F:ED3C \
                  01 00000000:00000000 00:00000000 00000000     0        0 6628 1 \
                  00000000f5770d53 20 0 0 10 -1";
    let entry = parse_tcp_line(mapped).expect("v4-mapped line");
    assert_eq!(entry.local, sa("[::ffff:127.0.0.1]:48119"));
    assert_eq!(normalise(entry.local), sa("127.0.0.1:48119"));
}

#[test]
fn generated_lines_round_trip() {
    for (local, remote, state) in [
        ("10.0.0.5:8008", "192.168.1.20:51234", 1),
        ("0.0.0.0:8448", "0.0.0.0:0", 0x0A),
        ("[2001:db8::1]:443", "[2001:db8:ffff::abcd]:65535", 8),
        ("[::]:8008", "[::]:0", 0x0A),
    ] {
        let text = line(0, local, remote, state, 42);
        let entry = parse_tcp_line(&text).unwrap_or_else(|| panic!("{text}"));
        let want = TcpEntry {
            local: sa(local),
            remote: sa(remote),
            state: TcpState(state),
            inode: 42,
        };
        assert_eq!(entry, want, "{text}");
    }
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let good = line(0, "127.0.0.1:80", "127.0.0.1:9999", 1, 7);
    let bad = [
        "   1: 0100007F:0050",
        "   1: 0100007F 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 0100007G:0050 00000000:0000 0A 0 0 0 0 0 1",
        "   1: +100007F:0050 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 0100007F:50 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 0100007F:10050 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 0100007F0:0050 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 0100007F:0050 00000000:0000 ZZ 0 0 0 0 0 1",
        "   1: 0100007F:0050 00000000:0000 100 0 0 0 0 0 1",
        "   1: 0100007F:0050 00000000:0000 0A 0 0 0 0 0 -1",
        "   1 0100007F:0050 00000000:0000 0A 0 0 0 0 0 1",
        "   1: 000000000000000000000000000000é:0050 00000000:0000 0A 0 0 0 0 0 1",
        "\u{0}\u{1}garbage",
    ];
    let text = format!("{HEADER4}\n{good}\n\n{}\n", bad.join("\n"));
    let (entries, malformed) = parse_tcp_table(&text);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].inode, 7);
    assert_eq!(malformed, bad.len());
    assert_eq!(parse_tcp_line(HEADER4), None);
    let control = "   1: 0100007F:0050 00000000:0000 0A 0 0 0 0 0 1";
    assert!(
        parse_tcp_line(control).is_some(),
        "the malformed lines differ from this one"
    );
    assert_eq!(parse_addr(":"), None);
}

/// Main process 812 and worker 900 with their fds and namespace tables; 812's tables also
/// list a socket of another process (inode 3001).
fn fake_tree() -> FakeProc {
    let proc = FakeProc::new();
    let tcp = [
        line(0, "0.0.0.0:8008", "0.0.0.0:0", 0x0A, 1001),
        line(1, "127.0.0.1:8008", "127.0.0.1:50000", 1, 1002),
        line(2, "127.0.0.1:9000", "0.0.0.0:0", 0x0A, 3001),
        line(3, "127.0.0.1:8008", "127.0.0.1:50001", 6, 0),
        line(4, "10.0.0.5:8448", "0.0.0.0:0", 0x0A, 1003),
    ];
    let tcp6 = [
        line(0, "[::]:8083", "[::]:0", 0x0A, 2001),
        line(
            1,
            "[::ffff:127.0.0.1]:8083",
            "[::ffff:127.0.0.1]:40000",
            1,
            2002,
        ),
        line(2, "[2001:db8::1]:8083", "[2001:db8::2]:40001", 1, 2003),
    ];
    for pid in [812, 900] {
        proc.file(
            &format!("{pid}/net/tcp"),
            &format!("{HEADER4}\n{}\n", tcp.join("\n")),
        );
        proc.file(
            &format!("{pid}/net/tcp6"),
            &format!("{HEADER4}\n{}\n", tcp6.join("\n")),
        );
    }
    proc.other_fd(812, 0, "/dev/null");
    proc.other_fd(812, 1, "pipe:[77]");
    proc.socket_fd(812, 3, 1001);
    proc.socket_fd(812, 4, 1002);
    proc.socket_fd(812, 5, 1003);
    proc.socket_fd(900, 3, 2001);
    proc.socket_fd(900, 4, 2002);
    proc.socket_fd(900, 5, 2003);
    proc
}

#[test]
fn owners_in_a_fake_tree() {
    let proc = fake_tree();
    let owners = SocketOwners::scan(proc.root(), &[812, 900, 4242]);
    assert_eq!((owners.malformed_lines(), owners.unreadable_pids()), (0, 0));
    assert_eq!(owners.len(), 6);

    // Exact established tuple.
    assert_eq!(
        owners.owner(sa("127.0.0.1:8008"), sa("127.0.0.1:50000")),
        Some(812)
    );
    // A new connection to 812's IPv4 wildcard listener.
    assert_eq!(
        owners.owner(sa("192.0.2.1:8008"), sa("198.51.100.7:1")),
        Some(812)
    );
    // ...but an IPv6 local address does not match an IPv4 wildcard.
    assert_eq!(
        owners.owner(sa("[2001:db8::1]:8008"), sa("[2001:db8::9]:1")),
        None
    );
    // A specific-address listener only matches its address.
    assert_eq!(
        owners.owner(sa("10.0.0.5:8448"), sa("1.2.3.4:5")),
        Some(812)
    );
    assert_eq!(owners.owner(sa("10.0.0.6:8448"), sa("1.2.3.4:5")), None);
    // Another process's socket in the same namespace is not ours.
    assert_eq!(owners.owner(sa("127.0.0.1:9000"), sa("127.0.0.1:1")), None);
}

#[test]
fn v4_mapped_and_v6_wildcard() {
    let proc = fake_tree();
    let owners = SocketOwners::scan(proc.root(), &[812, 900]);
    // The established v4-mapped socket, asked for in either form.
    for (local, remote) in [
        ("127.0.0.1:8083", "127.0.0.1:40000"),
        ("[::ffff:127.0.0.1]:8083", "[::ffff:127.0.0.1]:40000"),
    ] {
        assert_eq!(owners.owner(sa(local), sa(remote)), Some(900), "{local}");
    }
    assert_eq!(
        owners.owner(sa("[2001:db8::1]:8083"), sa("[2001:db8::2]:40001")),
        Some(900)
    );
    // The `::` listener accepts IPv6 and IPv4 (mapped or not) peers.
    assert_eq!(
        owners.owner(sa("[2001:db8::7]:8083"), sa("[2001:db8::8]:1")),
        Some(900)
    );
    assert_eq!(
        owners.owner(sa("192.0.2.1:8083"), sa("192.0.2.2:1")),
        Some(900)
    );
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        8083,
    );
    assert_eq!(owners.owner(mapped, sa("192.0.2.2:1")), Some(900));
    // Scope IDs do not get in the way.
    let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
        "2001:db8::1".parse::<Ipv6Addr>().expect("ip"),
        8083,
        0,
        3,
    ));
    assert_eq!(owners.owner(scoped, sa("[2001:db8::2]:40001")), Some(900));
}

#[test]
fn a_socket_shared_by_two_processes_is_ambiguous() {
    let proc = fake_tree();
    proc.file(
        "813/net/tcp",
        &line(0, "0.0.0.0:8008", "0.0.0.0:0", 0x0A, 1001),
    );
    proc.socket_fd(813, 3, 1001);
    let owners = SocketOwners::scan(proc.root(), &[812, 813]);
    assert_eq!(owners.owner(sa("192.0.2.1:8008"), sa("192.0.2.2:1")), None);
    // The established socket is still 812's alone.
    assert_eq!(
        owners.owner(sa("127.0.0.1:8008"), sa("127.0.0.1:50000")),
        Some(812)
    );
}

/// Every query of the tests above, and a few more.
const QUERIES: [(&str, &str); 9] = [
    ("127.0.0.1:8008", "127.0.0.1:50000"),
    ("127.0.0.1:8008", "127.0.0.1:50001"),
    ("192.0.2.1:8008", "198.51.100.7:1"),
    ("[2001:db8::1]:8008", "[2001:db8::9]:1"),
    ("10.0.0.5:8448", "1.2.3.4:5"),
    ("127.0.0.1:9000", "127.0.0.1:1"),
    ("127.0.0.1:8083", "127.0.0.1:40000"),
    ("[2001:db8::1]:8083", "[2001:db8::2]:40001"),
    ("[2001:db8::7]:8083", "[2001:db8::8]:1"),
];

/// The scan of `pids` after `drop_derivable`, checked to answer every query as the full
/// scan does.
fn compact_scan(proc: &FakeProc, pids: &[u32]) -> SocketOwners {
    let full = SocketOwners::scan(proc.root(), pids);
    let mut compact = full.clone();
    compact.drop_derivable();
    for (local, remote) in QUERIES {
        let (local, remote) = (sa(local), sa(remote));
        let answers = (compact.owner(local, remote), full.owner(local, remote));
        assert_eq!(answers.0, answers.1, "{local}");
    }
    compact
}

#[test]
fn dropping_what_the_listeners_give_changes_no_answer() {
    let proc = fake_tree();
    let full = SocketOwners::scan(proc.root(), &[812, 900]);
    assert_eq!(full.connections().count(), 3);
    // Each connection was accepted by the one process listening on its port.
    let compact = compact_scan(&proc, &[812, 900]);
    assert_eq!(compact.connections().count(), 0);

    // With a listener inherited by two processes, the connection keeps its entry: the
    // listeners alone would not know its owner.
    proc.file(
        "813/net/tcp",
        &line(0, "0.0.0.0:8008", "0.0.0.0:0", 0x0A, 1001),
    );
    proc.socket_fd(813, 3, 1001);
    let compact = compact_scan(&proc, &[812, 813, 900]);
    let kept: Vec<_> = compact.connections().collect();
    assert_eq!(kept, [(sa("127.0.0.1:8008"), sa("127.0.0.1:50000"))]);
    assert_eq!(
        compact.owner(sa("127.0.0.1:8008"), sa("127.0.0.1:50000")),
        Some(812)
    );
}

#[test]
fn shared_namespace_tables_are_read_once_and_errors_counted() {
    let proc = fake_tree();
    for pid in [812, 900] {
        let ns = proc.root().join(format!("{pid}/ns"));
        std::fs::create_dir_all(&ns).expect("create ns directory");
        std::os::unix::fs::symlink("net:[4026531840]", ns.join("net")).expect("ns link");
    }
    // 900's own (broken) table is not read: 812's namespace table is reused.
    proc.file("900/net/tcp", "   0: garbage\n");
    // 950 has sockets but no tables and no namespace link: unreadable, counted.
    proc.socket_fd(950, 3, 5);
    proc.dir("950/net/tcp");
    let owners = SocketOwners::scan(proc.root(), &[812, 900, 950]);
    assert_eq!(owners.malformed_lines(), 0);
    assert_eq!(owners.unreadable_pids(), 1);
    assert_eq!(
        owners.owner(sa("192.0.2.1:8083"), sa("192.0.2.2:1")),
        Some(900)
    );
    assert!(SocketOwners::scan(proc.root(), &[]).is_empty());
}

/// In the real `/proc`: a listener on 127.0.0.1:0 and an accepted connection belong to us.
#[test]
fn real_sockets_of_this_process() {
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let client = TcpStream::connect(addr).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    let owners = SocketOwners::scan(Path::new("/proc"), &[pid]);
    let local = server.local_addr().expect("server local addr");
    assert_eq!(owners.owner(local, peer), Some(pid));
    let client_local = client.local_addr().expect("client addr");
    assert_eq!(owners.owner(client_local, addr), Some(pid));
    // A connection not accepted yet resolves through the listener.
    assert_eq!(owners.owner(addr, sa("127.0.0.1:1")), Some(pid));
    assert_eq!(owners.malformed_lines(), 0);
    // Watching another PID finds nothing of ours.
    let others = SocketOwners::scan(Path::new("/proc"), &[1]);
    assert_eq!(others.owner(local, peer), None);
}

/// In the real `/proc`: an IPv4 client of a dual-stack `[::]` listener shows up as
/// `::ffff:127.0.0.1` in `tcp6` and is found under its IPv4 form. Skipped without IPv6.
#[test]
fn real_v4_client_of_a_dual_stack_listener() {
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        return;
    };
    let port = listener.local_addr().expect("local addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect over IPv4");
    let (_server, peer) = listener.accept().expect("accept");
    assert!(normalise(peer).is_ipv4(), "{peer}");
    let pid = std::process::id();
    let owners = SocketOwners::scan(Path::new("/proc"), &[pid]);
    let client_local = client.local_addr().expect("client addr");
    assert_eq!(
        owners.owner(sa(&format!("127.0.0.1:{port}")), client_local),
        Some(pid)
    );
    assert_eq!(
        owners.owner(sa(&format!("127.0.0.9:{port}")), sa("127.0.0.1:1")),
        Some(pid)
    );
}
