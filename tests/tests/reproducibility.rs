//! Same seed, same bytes: for any batch size, any shard split, and on rerun.

use sdeflow_kernel::Result;
use sdeflow_tests::{bits, ring_pipeline};

#[test]
fn same_seed_gives_same_bytes_and_another_seed_does_not() -> Result<()> {
    let a = ring_pipeline("euler_maruyama", 50, 7)?
        .build()?
        .sample(300)?;
    let b = ring_pipeline("euler_maruyama", 50, 7)?
        .build()?
        .sample(300)?;
    let c = ring_pipeline("euler_maruyama", 50, 8)?
        .build()?
        .sample(300)?;
    assert_eq!(bits(&a.state.x)?, bits(&b.state.x)?);
    assert_ne!(bits(&a.state.x)?, bits(&c.state.x)?);
    Ok(())
}

#[test]
fn shards_reassemble_the_whole_job() -> Result<()> {
    let pipeline = ring_pipeline("euler_maruyama", 50, 11)?.build()?;
    let whole = bits(&pipeline.sample(2_500)?.state.x)?;
    let mut sharded = Vec::new();
    for (offset, n) in [(0u64, 1_100usize), (1_100, 1), (1_101, 1_399)] {
        sharded.extend(bits(&pipeline.sample_range(offset, n)?.state.x)?);
    }
    assert_eq!(whole, sharded);
    Ok(())
}

#[test]
fn chunking_off_and_on_agree_for_a_row_independent_model() -> Result<()> {
    // The oracle's rows are independent, so chunk size cannot change its bits.
    let on = ring_pipeline("euler_maruyama", 20, 3)?
        .build()?
        .sample(1_500)?;
    let off = ring_pipeline("euler_maruyama", 20, 3)?
        .chunk_rows(None)
        .build()?
        .sample(1_500)?;
    assert_eq!(bits(&on.state.x)?, bits(&off.state.x)?);
    assert_eq!(on.nfe, 20);
    Ok(())
}
