//! EvoLLM-JP in miniature: a Japanese LLM and two English math LLMs, none of which solves Japanese
//! arithmetic word problems, merged by an evolved DARE-TIES recipe that does.
//!
//!     cargo run --release --example evollm -- [--out DIR] [--seed N] [--trials N] [--search-limit N] [--test-limit N]

#[path = "world/mod.rs"]
mod world;

fn main() -> anyhow::Result<()> {
    let opts = world::Options::parse("evollm", 150)?;
    world::run(&world::evollm(), &opts)?;
    Ok(())
}
