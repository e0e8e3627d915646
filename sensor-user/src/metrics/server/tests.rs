use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
    time::timeout,
};

use super::{SHUTDOWN_GRACE, bind, serve, serve_listener};
use crate::metrics::{
    Metrics, MetricsError,
    tests::{samples, value},
};

const PATIENCE: Duration = Duration::from_secs(5);

/// A server on 127.0.0.1:0 and the sender that stops it.
async fn start(
    metrics: Arc<Metrics>,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), MetricsError>>,
) {
    let listener = bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_listener(listener, metrics, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `stream` and reads its response (HTTP/1.1, Content-Length bodies).
async fn exchange(stream: &mut TcpStream, method: &str, path: &str, close: bool) -> Reply {
    let connection = if close { "close" } else { "keep-alive" };
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("response head in time")
            .expect("read response");
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or(0);
    let length = if method == "HEAD" { 0 } else { length };
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 65536];
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("response body in time")
            .expect("read body");
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    exchange(&mut stream, method, path, true).await
}

async fn stop_and_join(
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), MetricsError>>,
    within: Duration,
) {
    stop.send(()).expect("server still running");
    timeout(within, task)
        .await
        .expect("server stopped in time")
        .expect("server task did not panic")
        .expect("server returned Ok");
}

#[tokio::test]
async fn serves_metrics_404_elsewhere_and_stops_on_shutdown() {
    let metrics = Arc::new(Metrics::new());
    metrics.request("room_history", 412, 50_085);
    let (addr, stop, task) = start(Arc::clone(&metrics)).await;

    let reply = get(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let s = samples(&reply.body);
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_requests_total",
            &[("class", "room_history")]
        ),
        1.0
    );
    assert!(reply.body.ends_with("# EOF\n"));

    // Each scrape renders anew.
    metrics.request("room_history", 1, 1);
    let s = samples(&get(addr, "GET", "/metrics?x=1").await.body);
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_requests_total",
            &[("class", "room_history")]
        ),
        2.0
    );

    for path in ["/", "/metrics/", "/metric", "/favicon.ico"] {
        let reply = get(addr, "GET", path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body.contains("/metrics"), "{path}: {}", reply.body);
    }
    let reply = get(addr, "POST", "/metrics").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = get(addr, "HEAD", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());

    stop_and_join(stop, task, PATIENCE).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn keep_alive_connections_are_served_and_do_not_hold_shutdown() {
    let (addr, stop, task) = start(Arc::new(Metrics::new())).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for _ in 0..3 {
        let reply = exchange(&mut stream, "GET", "/metrics", false).await;
        assert_eq!(reply.status, 200);
    }
    // The connection is idle and open: shutdown closes it rather than wait for the client.
    stop_and_join(stop, task, SHUTDOWN_GRACE + Duration::from_secs(1)).await;
    let mut rest = Vec::new();
    let n = timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("connection closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "no more data after shutdown");
}

#[tokio::test]
async fn a_client_that_sends_nothing_does_not_block_others() {
    let (addr, stop, task) = start(Arc::new(Metrics::new())).await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let reply = get(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    stop_and_join(stop, task, SHUTDOWN_GRACE + Duration::from_secs(1)).await;
}

#[tokio::test]
async fn serve_binds_and_stops() {
    let result = timeout(
        PATIENCE,
        serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new()),
            async {},
        ),
    )
    .await
    .expect("serve stopped in time");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error_that_names_it() {
    let taken = bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, Arc::new(Metrics::new()), std::future::pending())
        .await
        .expect_err("the address is taken");
    assert!(
        matches!(err, MetricsError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(
        message.contains("another process holds this port"),
        "{message}"
    );
}
