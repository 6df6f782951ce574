//! EvoVLM-JP in miniature: an English VLM and a Japanese LLM, neither of which answers Japanese
//! questions about images, merged by an evolved DARE-TIES recipe that does.
//!
//!     cargo run --release --example evovlm -- [--out DIR] [--seed N] [--trials N] [--search-limit N] [--test-limit N]

#[path = "world/mod.rs"]
mod world;

fn main() -> anyhow::Result<()> {
    let opts = world::Options::parse("evovlm", 150)?;
    world::run(&world::evovlm(), &opts)?;
    Ok(())
}
