#[tokio::main]
async fn main() {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    let room = args.get(1).cloned().unwrap_or_else(|| "lobby@conference.localhost".into());
    let locked = args.get(2).cloned();
    match xmpp_proto::scenario::run(&Default::default(), &room, locked.as_deref()).await {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            println!("OK");
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
