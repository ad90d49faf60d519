//! A small SMTP server on loopback that speaks enough ESMTP (EHLO, STARTTLS, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT) for a real client to hold a real conversation with it, and keeps what it
//! receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message, headers and body.
    pub data: String,
    /// TLS version the session used, if it was upgraded.
    pub tls: Option<rustls::ProtocolVersion>,
}

/// A running sink.
#[derive(Debug)]
pub struct SmtpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Messages received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Starts a sink; with `tls`, it offers STARTTLS.
    pub async fn start(tls: Option<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind smtp sink");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let acceptor = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (store, acceptor) = (store.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if tcp.write_all(b"220 localhost ESMTP custody-test-sink\r\n").await.is_err() {
                        return;
                    }
                    match session(&mut tcp, acceptor.is_some(), None, &store).await {
                        Ok(Step::StartTls) => {
                            let Some(acceptor) = acceptor else { return };
                            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                            let version = tls.get_ref().1.protocol_version();
                            let _ = session(&mut tls, false, version, &store).await;
                        }
                        Ok(Step::Done) | Err(_) => {}
                    }
                });
            }
        });
        Self { addr, received, task }
    }
}

enum Step {
    Done,
    StartTls,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    offer_tls: bool,
    tls: Option<rustls::ProtocolVersion>,
    store: &Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<Step> {
    let mut reader = BufReader::new(stream);
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(Step::Done);
        }
        let command = line.trim_end().to_owned();
        let verb = command.split_whitespace().next().unwrap_or("").to_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_tls => b"250-localhost\r\n250-8BITMIME\r\n250 STARTTLS\r\n",
            "EHLO" => b"250-localhost\r\n250 8BITMIME\r\n",
            "HELO" => b"250 localhost\r\n",
            "STARTTLS" if offer_tls => {
                reader.get_mut().write_all(b"220 ready to start TLS\r\n").await?;
                return Ok(Step::StartTls);
            }
            "MAIL" => {
                from = command
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_owned())
                    .unwrap_or_default();
                b"250 ok\r\n"
            }
            "RCPT" => {
                to.push(
                    command
                        .split_once(':')
                        .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_owned())
                        .unwrap_or_default(),
                );
                b"250 ok\r\n"
            }
            "DATA" => {
                reader.get_mut().write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 {
                        return Ok(Step::Done);
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if let Ok(mut r) = store.lock() {
                    r.push(Received {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                        tls,
                    });
                }
                b"250 queued\r\n"
            }
            "RSET" | "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                reader.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(Step::Done);
            }
            _ => b"502 not implemented\r\n",
        };
        reader.get_mut().write_all(reply).await?;
    }
}
