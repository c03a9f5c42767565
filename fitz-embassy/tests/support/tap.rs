//! The host proof of fitz-embassy: an embassy executor and a real
//! embassy-net (smoltcp) TCP/IP stack on a TAP device, in a network
//! namespace this process creates for itself, talking TCP to fitz-testkit
//! on the host side of the TAP device. Every domain is exercised, then the
//! connection is cut by fitz-testkit's fault relay and the subscriptions
//! are seen restored.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and `/dev/net/tun`; it
//! fails, loudly, without them. Nothing on the host is touched: the
//! namespace, and the TAP device in it, vanish with the process.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embassy_executor::{Executor, Spawner};
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use fitz_client::ops::kv::TxMode;
use fitz_client::ops::stream::Query;
use fitz_client::{Item, State};
use fitz_embassy::{Config, Handle, Remote, Resources, Runner};
use fitz_testkit::relay::Relay;
use fitz_testkit::{Broker, BrokerConfig, Dialect};
use fitz_wire::schedule::DeliveryMode;
use fitz_wire::{Payload, Uuid};
use static_cell::{ConstStaticCell, StaticCell};

#[cfg(feature = "defmt")]
#[path = "defmt_sink.rs"]
mod defmt_sink;

/// The host's address on the TAP link, where fitz-testkit listens.
const HOST: [u8; 4] = [10, 77, 0, 1];
/// The embassy-net stack's address.
const DEVICE: [u8; 4] = [10, 77, 0, 2];

static DONE: AtomicBool = AtomicBool::new(false);
static OUTCOME: Mutex<Option<Result<(), String>>> = Mutex::new(None);
static RESOURCES: ConstStaticCell<Resources<'static>> = ConstStaticCell::new(Resources::new());
static STACK: StaticCell<StackResources<4>> = StaticCell::new();

/// What the embassy side needs from the host side.
#[derive(Clone)]
struct Host {
    /// The relay in front of the broker, on the TAP address.
    relay: Arc<Relay>,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs the whole proof; panics with the reason if anything fails.
pub fn run() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the TAP test needs root (it creates a network namespace and a TAP device); it is not skipped"
    );
    assert!(std::path::Path::new("/dev/net/tun").exists(), "/dev/net/tun is missing: the TAP test cannot run");
    // Only this thread (and the threads it starts) enter the namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    sh(&["ip", "link", "set", "lo", "up"]);
    let dev = TunTapDevice::new("tap0").expect("create tap0");
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", "tap0"]);
    sh(&["ip", "link", "set", "tap0", "up"]);
    println!("netns     private network namespace with tap0 = 10.77.0.1/24; embassy-net at 10.77.0.2");

    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("the TAP test did not finish in 120 s");
        std::process::exit(3);
    });

    let (host_tx, host_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let cfg = BrokerConfig {
                tcp: Some(SocketAddr::from((HOST, 0))),
                ws: None,
                ..BrokerConfig::anonymous().with_dialect(Dialect::Current)
            };
            let broker = Broker::start(cfg).await.expect("broker");
            let upstream = broker.tcp_addr().expect("broker TCP address");
            let relay = Arc::new(Relay::start_on(SocketAddr::from((HOST, 0)), upstream).await.expect("relay"));
            println!("broker    fitz-testkit (current dialect) at {upstream}, fault relay at {}", relay.addr());
            // The RPC worker is a fitz-std client on the host.
            let worker = fitz_std::Client::builder(format!("tcp://{upstream}")).connect().await.expect("worker client");
            let serving = fitz_std::rpc::serve(&worker.rpc(), "rpc://tap/math/double", 4, |req, _chunks| async move {
                let n: u64 = std::str::from_utf8(req.body())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| fitz_std::rpc::Failure::new(6010, "not a number"))?;
                Ok::<_, fitz_std::rpc::Failure>((2 * n).to_string().into_bytes())
            })
            .await
            .expect("serve");
            host_tx.send(Host { relay: relay.clone() }).expect("hand over");
            let _ = stop_rx.await;
            serving.stop();
            worker.close().await;
            broker.stop().await;
        });
    });
    let host = host_rx.recv().expect("the host side did not start");

    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    executor.run_until(
        move |spawner| {
            let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(Ipv4Address::from(DEVICE), 24),
                gateway: None,
                dns_servers: Default::default(),
            });
            let (stack, runner) = embassy_net::new(dev, config, STACK.init(StackResources::new()), 0x5eed);
            spawner.spawn(net_task(runner).expect("net task"));
            spawner.spawn(main_task(spawner, stack, host).expect("main task"));
        },
        || DONE.load(Ordering::Acquire),
    );
    let _ = stop_tx.send(());
    host_thread.join().expect("host thread");
    let outcome = OUTCOME.lock().expect("outcome").take().expect("the scenario reported nothing");
    if let Err(e) = outcome {
        panic!("TAP scenario failed: {e}");
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn fitz_task(runner: Runner<'static>) {
    let stopped = runner.run().await;
    println!("runner    the connection task stopped: {stopped:?}");
}

#[embassy_executor::task]
async fn main_task(spawner: Spawner, stack: Stack<'static>, host: Host) {
    let outcome = scenario(spawner, stack, host).await;
    *OUTCOME.lock().expect("outcome") = Some(outcome);
    DONE.store(true, Ordering::Release);
}

/// Turns any error into a message naming the step.
trait Step<T> {
    fn at(self, step: &str) -> Result<T, String>;
}

impl<T, E: core::fmt::Debug> Step<T> for Result<T, E> {
    fn at(self, step: &str) -> Result<T, String> {
        self.map_err(|e| format!("{step}: {e:?}"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn scenario(spawner: Spawner, stack: Stack<'static>, host: Host) -> Result<(), String> {
    stack.wait_config_up().await;
    let relay_addr = host.relay.addr();
    let remote = Remote::Ip((Ipv4Address::from(HOST), relay_addr.port()).into());
    let mut config = Config::new(remote);
    config.service_name = Some("fitz-embassy-tap");
    config.reconnect.initial_ms = 50;
    let (client, runner) = fitz_embassy::new(stack, RESOURCES.take(), config, 0x1234_5678);
    spawner.spawn(fitz_task(runner).at("spawn the connection task")?);
    client.ready().await.at("connect")?;
    let (dialect, caps) = client.dialect().ok_or("authenticated without a dialect")?;
    println!(
        "connect   through the relay at {relay_addr}: {:?}, {dialect:?} dialect, capabilities {:#x}",
        client.state(),
        caps.0
    );

    // Subscriptions that must survive the reconnect.
    let mut notices = client.notice().subscribe("notice://tap/dev/*").await.at("notice subscribe")?.into_inner();
    let mut commits = client.stream().subscribe("stream://tap/log/main").await.at("stream subscribe")?;

    let tx = client.kv().begin("kv://tap/dev/state", TxMode::ReadWrite).await.at("kv begin")?;
    tx.put(b"boot", b"1").await.at("kv put")?;
    let got = tx.get(b"boot").await.at("kv get")?.ok_or("kv get: key missing")?;
    tx.commit().await.at("kv commit")?;
    println!("kv        put boot=1, read back {:?}, committed", text(got.as_ref()));
    if got.as_ref() != b"1" {
        return Err("kv: wrong value read back".into());
    }

    let id = client.queue().enqueue("queue://tap/jobs/blink", b"blink twice").await.at("queue enqueue")?;
    let page = client.queue().reserve("queue://tap/jobs/blink", 30).await.at("queue reserve")?;
    let msg = page.messages().next().ok_or("queue reserve: no message")?;
    let body = text(msg.body().as_ref());
    msg.complete().await.at("queue complete")?;
    println!("queue     enqueued #{id}, reserved {body:?}, completed");

    let reply = client.rpc().call_once("rpc://tap/math/double", b"21", Uuid([7; 16])).await.at("rpc call")?;
    println!("rpc       double(21) by the fitz-std worker on the host = {}", text(reply.as_ref()));
    if reply.as_ref() != b"42" {
        return Err("rpc: wrong answer".into());
    }

    let held = client.lease().owner("tap-device").acquire("lease://tap/dev/leader", 30).await.at("lease acquire")?;
    println!("lease     acquired {} with fencing token {}", held.route(), held.token());
    held.release().await.at("lease release")?;
    let info = client.lease().query("lease://tap/dev/leader").await.at("lease query")?;
    println!("lease     released; held now: {}", info.is_held());

    client.notice().publish("notice://tap/dev/up", b"hello from smoltcp").await.at("notice publish")?;
    let n = next_notice(&mut notices).await?;
    println!("notice    published and received back: {n:?}");

    let session = client.stream().begin("stream://tap/log/main").await.at("stream begin")?;
    session.append(0, b"boot").await.at("stream append")?;
    session.append(1, b"link up").await.at("stream append")?;
    session.commit().await.at("stream commit")?;
    let page = client.stream().read_page(&Query::new("stream://tap/log/main")).await.at("stream read")?;
    let records: Vec<String> = page.events().map(|e| text(e.record.body.as_ref())).collect();
    println!("stream    appended 2 records and read them back: {records:?}");
    let note = commits.next().await.ok_or("stream subscription ended")?.at("stream notification")?;
    println!("stream    commit notification for {}", note.route());

    let route = "schedule://tap/jobs/nightly/compact";
    client.schedule().create(route, "0 3 * * *", DeliveryMode::Broadcast, b"compact").await.at("schedule create")?;
    let list = client.schedule().list(0, 10).await.at("schedule list")?;
    let listed = list.matching("schedule://tap/**").count();
    client.schedule().cancel(route).await.at("schedule cancel")?;
    println!("schedule  created, listed ({listed} of this run), cancelled");
    if listed != 1 {
        return Err("schedule: the created schedule was not listed".into());
    }

    // Reconnect: the relay cuts the connection; the driver reconnects with
    // backoff and restores both subscriptions before Authenticated.
    let epoch = client.epoch();
    host.relay.cut_all();
    let mut state = client.state();
    while state == State::Authenticated {
        state = client.changed(state).await;
    }
    println!("reconnect relay cut the connection: {state:?}");
    client.ready().await.at("reconnect")?;
    println!("reconnect authenticated again, epoch {epoch} -> {}", client.epoch());
    match notices.next().await {
        Some(Ok(Item::Restored)) => println!("reconnect notice subscription restored"),
        other => return Err(format!("notice subscription after the reconnect: {other:?}")),
    }
    client.notice().publish("notice://tap/dev/again", b"still here").await.at("notice publish after reconnect")?;
    let n = next_notice(&mut notices).await?;
    println!("reconnect the restored notice subscription delivers: {n:?}");
    let session = client.stream().begin("stream://tap/log/main").await.at("stream begin after reconnect")?;
    session.append(2, b"reconnected").await.at("stream append after reconnect")?;
    session.commit().await.at("stream commit after reconnect")?;
    let note = commits.next().await.ok_or("stream subscription ended")?.at("stream notification after reconnect")?;
    println!("reconnect the restored stream subscription delivers a commit of {}", note.route());

    let stats = client.stats();
    println!("done      every domain over embassy-net; at most {} requests in flight", stats.max_in_flight);
    #[cfg(feature = "defmt")]
    println!("defmt     {} bytes of encoded log frames", defmt_sink::BYTES.load(std::sync::atomic::Ordering::Relaxed));
    client.close();
    let mut state = client.state();
    while state != State::Closed {
        state = client.changed(state).await;
    }
    Ok(())
}

async fn next_notice(sub: &mut fitz_client::Subscription<Handle<'static, 4, 4, 4, 512>>) -> Result<String, String> {
    loop {
        match sub.next().await {
            Some(Ok(Item::Record { payload, .. })) => {
                let n =
                    fitz_wire::notice::Notify::decode(payload.as_ref()).map_err(|e| format!("notice decode: {e:?}"))?;
                return Ok(format!("{} {:?}", n.route, text(n.body)));
            }
            Some(Ok(Item::Restored)) => continue,
            Some(Err(e)) => return Err(format!("notice subscription: {e:?}")),
            None => return Err("notice subscription ended".into()),
        }
    }
}
