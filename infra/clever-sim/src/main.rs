//! `clever-sim [--port 4600] [--seed 1] [--districts 1] [--schools 2] [--students 500] [--teachers 30]
//! [--sections 40]`: serves a generated Clever on loopback and prints each district's credentials.
//! Faults: `curl -X POST localhost:4600/_sim/faults -d '{"statuses":[429,500]}'` (see `server.rs`).

use clever_sim::{DistrictSpec, Simulator, World};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == &format!("--{name}")) {
            Some(i) => Ok(args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--{name} needs a value"))?.parse()?),
            None => Ok(default),
        }
    };
    let spec = DistrictSpec::sized(
        option("schools", 2)? as usize,
        option("students", 500)? as usize,
        option("teachers", 30)? as usize,
        option("sections", 40)? as usize,
    );
    let world = World::generate(option("seed", 1)?, &vec![spec; option("districts", 1)? as usize]);
    let sim = Simulator::start(world, option("port", 4600)? as u16).await?;
    println!("clever-sim on {}", sim.base_url);
    for d in &sim.world.lock().unwrap().districts {
        println!("district {} ({}): client_id={} client_secret={}", d.id, d.name, d.client_id, d.client_secret);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
