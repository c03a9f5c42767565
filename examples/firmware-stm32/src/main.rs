//! Fitz client firmware for the NUCLEO-F429ZI.
//!
//! Brings up the on-chip Ethernet MAC with the board's LAN8742A PHY, gets an
//! address (DHCP, or static from `config`), and then ticks once a second.
//!
//! The network, the executor and the tick loop are the same whether the
//! `fitz` feature is on or off, so the difference between the two builds is
//! what the Fitz client costs in flash and RAM (see `size.sh`).

#![no_std]
#![no_main]

mod config;
#[cfg(feature = "fitz")]
mod fitz;

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, eth, rcc, rng};
use embassy_time::{Duration, Ticker};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    HASH_RNG => rng::InterruptHandler<RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// Sockets of the IP stack: the DHCP client and one TCP connection to the
/// broker, plus one spare. The same in both builds so the RAM difference
/// is the client's alone.
const SOCKETS: usize = 3;

/// DMA descriptors and frame buffers (about 1.5 KiB each way per slot).
const TX_FRAMES: usize = 4;
const RX_FRAMES: usize = 4;

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    info!("firmware-stm32: broker {}:{}", config::BROKER_IP, config::BROKER_PORT);

    let mut rng = Rng::new(p.RNG, Irqs);
    let net_seed = rng.next_u64();
    #[cfg(feature = "fitz")]
    let fitz_seed = rng.next_u64();

    static PACKETS: StaticCell<PacketQueue<TX_FRAMES, RX_FRAMES>> = StaticCell::new();
    let device: Device = Ethernet::new(
        PACKETS.init_with(PacketQueue::new),
        p.ETH,
        Irqs,
        p.PA1,  // RMII_REF_CLK
        p.PA7,  // RMII_CRS_DV
        p.PC4,  // RMII_RXD0
        p.PC5,  // RMII_RXD1
        p.PG13, // RMII_TXD0
        p.PB13, // RMII_TXD1
        p.PG11, // RMII_TX_EN
        config::MAC,
        p.ETH_SMA,
        p.PA2, // RMII_MDIO
        p.PC1, // RMII_MDC
    );

    static NET: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(device, net_config(), NET.init(StackResources::new()), net_seed);
    spawner.spawn(unwrap!(net_task(runner)));

    wait_for_address(stack).await;

    #[cfg(feature = "fitz")]
    let client = fitz::start(spawner, stack, fitz_seed);

    let mut ticker = Ticker::every(Duration::from_secs(1));
    let mut counter: u32 = 0;
    loop {
        ticker.next().await;
        counter = counter.wrapping_add(1);
        info!("tick {}", counter);
        #[cfg(feature = "fitz")]
        fitz::tick(&client, counter).await;
    }
}

/// HSE 8 MHz from the ST-LINK's MCO (bypass) -> SYSCLK 168 MHz, and the
/// 48 MHz PLL Q output the RNG needs.
fn clocks() -> embassy_stm32::Config {
    let mut c = embassy_stm32::Config::default();
    c.rcc.hse = Some(rcc::Hse { freq: Hertz(8_000_000), mode: rcc::HseMode::Bypass });
    c.rcc.pll_src = rcc::PllSource::HSE;
    c.rcc.pll = Some(rcc::Pll {
        prediv: rcc::PllPreDiv::DIV4,
        mul: rcc::PllMul::MUL168,
        divp: Some(rcc::PllPDiv::DIV2),
        divq: Some(rcc::PllQDiv::DIV7),
        divr: None,
    });
    c.rcc.sys = rcc::Sysclk::PLL1_P;
    c.rcc.ahb_pre = rcc::AHBPrescaler::DIV1;
    c.rcc.apb1_pre = rcc::APBPrescaler::DIV4;
    c.rcc.apb2_pre = rcc::APBPrescaler::DIV2;
    c
}

fn net_config() -> embassy_net::Config {
    match config::DEVICE_IP {
        Some((ip, prefix)) => embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::from(ip), prefix),
            gateway: config::GATEWAY.map(Ipv4Address::from),
            dns_servers: Default::default(),
        }),
        None => embassy_net::Config::dhcpv4(Default::default()),
    }
}

async fn wait_for_address(stack: Stack<'static>) {
    info!("waiting for link and address");
    stack.wait_config_up().await;
    if let Some(c) = stack.config_v4() {
        info!("address {}", c.address);
    }
}
