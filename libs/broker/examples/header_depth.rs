//! Measures the stack a deeply nested header costs lapin: takes one message from `depth-test`
//! (published by hand) with `basic_get` and exits 0; a stack overflow aborts the process.
//! Run with `RUST_MIN_STACK` set to the I/O thread's stack to try.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let got = ch
        .basic_get("depth-test".into(), lapin::options::BasicGetOptions { no_ack: false })
        .await?;
    let got = got.is_some();
    println!("got: {got}");
    Ok(())
}
