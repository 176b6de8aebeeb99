//! Data parallelism: ranks that each take a disjoint slice of every batch, and a [`Reduce`]
//! that sums their gradients so that every rank takes the same optimizer step.
//!
//! A step's batch is rows (n − 1)·B … n·B − 1 of the run's stream of training rows, whatever
//! the world size: rank r of W takes rows r·B/W … (r + 1)·B/W − 1 of it, their data and DSM
//! draws keyed by the row's index as in one process. Each rank's loss is weighted by its share
//! of the batch, so the sum over ranks of the losses and gradients is the whole batch's mean,
//! the one-process value up to the order of the sum (the average over ranks when the shares
//! are equal). The optimizer, the clip and the EMAs then act on identical gradients on every
//! rank, and the weights stay identical.
//!
//! - [`Single`]: one process; the sum over one rank is the identity, and the training loop
//!   has one code path.
//! - [`Threads`]: ranks as threads of one process (the test of the above at world sizes 1, 2
//!   and 4; data parallelism across a machine's CPU sockets).
//! - `Nccl` (feature `nccl`): one process per GPU, NCCL's all-reduce through candle's CUDA
//!   device (cudarc), the communicator set up from the launcher's environment ([`Launch`]).

use std::sync::{Arc, Barrier, Mutex};

use candle_core::{DType, Tensor};
use sdeflow_kernel::{Error, Result};

/// How ranks combine what each computed: a sum over the ranks that every rank receives, bit
/// for bit the same.
pub trait Reduce: Send + Sync + std::fmt::Debug {
    /// This process's rank, 0 … world − 1 (rank 0 writes the checkpoints).
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world(&self) -> usize;
    /// The sum over every rank of the flat tensor `x` (f32 or f64, on this rank's device, of
    /// the same length on every rank), on every rank.
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor>;
}

/// One process, one rank: the sum is `x` itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Reduce for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}

/// Ranks as threads of one process, meeting at a barrier: each puts its tensor on the host,
/// and every rank sums them in rank order (so every rank gets the same bits). Each rank runs
/// on a thread of its own outside rayon's global pool (in a pool of its own, as the test
/// does): ranks wait for each other, and two ranks queued on one worker would wait forever.
#[derive(Debug, Clone)]
pub struct Threads {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

impl Threads {
    /// The `world` ranks of one group, rank order; hand one to each thread.
    pub fn group(world: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Vec::new(); world]),
            barrier: Barrier::new(world),
        });
        (0..world)
            .map(|rank| Self {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Reduce for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        let poisoned = || Error::Msg("a rank panicked during an all-reduce".into());
        let mine = x.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let len = mine.len();
        self.shared.slots.lock().map_err(|_| poisoned())?[self.rank] = mine;
        self.shared.barrier.wait();
        let sum = {
            let slots = self.shared.slots.lock().map_err(|_| poisoned())?;
            if let Some(other) = slots.iter().position(|s| s.len() != len) {
                return Err(Error::Shape(format!(
                    "all-reduce: rank {} gave {len} values, rank {other} {}",
                    self.rank,
                    slots[other].len()
                )));
            }
            // In the tensor's own precision, rank by rank: what NCCL's sum rounds to.
            let mut sum = slots[0].clone();
            for s in &slots[1..] {
                for (a, b) in sum.iter_mut().zip(s) {
                    *a = if x.dtype() == DType::F64 {
                        *a + b
                    } else {
                        f64::from(*a as f32 + *b as f32)
                    };
                }
            }
            sum
        };
        // Nobody overwrites a slot before every rank has read them all.
        self.shared.barrier.wait();
        Ok(Tensor::from_vec(sum, len, x.device())?.to_dtype(x.dtype())?)
    }
}

/// Where this process sits in a data-parallel launch, read from the launcher's environment:
/// torchrun's (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), or, for
/// `srun` with more than one task, Slurm's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
/// with `MASTER_ADDR` and `MASTER_PORT` exported by the batch script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
    /// Its rank on its node.
    pub local_rank: usize,
    /// The GPU it takes: `cuda:LOCAL_RANK`, or `cuda:0` when `CUDA_VISIBLE_DEVICES` shows it
    /// one GPU (Slurm's `--gpus-per-task=1`).
    pub gpu: usize,
    /// Where rank 0 listens for the others, to hand them NCCL's unique id: `MASTER_ADDR` and
    /// `SDEFLOW_RENDEZVOUS_PORT`, else `MASTER_PORT` + 1 (torchrun's agent holds `MASTER_PORT`
    /// for its own store).
    pub master: String,
}

impl Launch {
    /// The launch `env` describes (a lookup of environment variables), or `None` when it
    /// names no world (a plain, single process). A partial or inconsistent one is an error
    /// naming the variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let (rank_var, world_var, local_var) = if env("WORLD_SIZE").is_some() {
            ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if env("SLURM_NTASKS")
            .is_some_and(|n| n.trim().parse::<usize>().is_ok_and(|n| n > 1))
        {
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let number = |var: &str| -> Result<usize> {
            let v = env(var).ok_or_else(|| {
                Error::invalid(
                    "train",
                    var,
                    format!("{world_var} is set but {var} is not: launch with torchrun, srun, or set both"),
                )
            })?;
            v.trim()
                .parse()
                .map_err(|_| Error::invalid("train", var, format!("`{v}` is not a whole number")))
        };
        let (rank, world) = (number(rank_var)?, number(world_var)?);
        let local_rank = if env(local_var).is_some() {
            number(local_var)?
        } else {
            rank
        };
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                "train",
                rank_var,
                format!("rank {rank} of a world of {world}: a rank is 0 … {world_var} − 1"),
            ));
        }
        let port = match (env("SDEFLOW_RENDEZVOUS_PORT"), env("MASTER_PORT")) {
            (Some(p), _) => Some(p.trim().parse::<u16>().map_err(|_| {
                Error::invalid(
                    "train",
                    "SDEFLOW_RENDEZVOUS_PORT",
                    format!("`{p}` is not a port"),
                )
            })?),
            (None, Some(p)) => Some(
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .and_then(|p| p.checked_add(1))
                    .ok_or_else(|| {
                        Error::invalid(
                            "train",
                            "MASTER_PORT",
                            format!(
                                "`{p}` is not a port below 65535 (rank 0 listens on the next one)"
                            ),
                        )
                    })?,
            ),
            (None, None) => None,
        };
        let master = match (env("MASTER_ADDR"), port) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            _ if world == 1 => String::new(),
            _ => {
                return Err(Error::invalid(
                    "train",
                    "MASTER_ADDR",
                    "a data-parallel run needs MASTER_ADDR and MASTER_PORT (rank 0's host and a free port), as torchrun sets them",
                ));
            }
        };
        let one_visible = env("CUDA_VISIBLE_DEVICES")
            .is_some_and(|v| v.split(',').filter(|d| !d.trim().is_empty()).count() == 1);
        Ok(Some(Self {
            rank,
            world,
            local_rank,
            gpu: if one_visible { 0 } else { local_rank },
            master,
        }))
    }
}

/// Rank 0 hands `id` (NCCL's unique id) to the other ranks over TCP at `launch.master`; the
/// others receive it there. Rank 0 listens until every other rank has taken it.
pub fn rendezvous(launch: &Launch, id: Option<[u8; 128]>) -> Result<[u8; 128]> {
    use std::io::{Read, Write};
    let io = |what: &str, e: std::io::Error| {
        Error::Msg(format!(
            "rank {} of {}: {what} {}: {e}",
            launch.rank, launch.world, launch.master
        ))
    };
    if launch.rank == 0 {
        let id = id.ok_or_else(|| Error::Msg("rank 0 makes the id".into()))?;
        let port = launch.master.rsplit(':').next().unwrap_or("0");
        let listener = std::net::TcpListener::bind(format!("0.0.0.0:{port}"))
            .map_err(|e| io("cannot listen at", e))?;
        for _ in 1..launch.world {
            let (mut stream, _) = listener.accept().map_err(|e| io("cannot accept at", e))?;
            stream
                .write_all(&id)
                .map_err(|e| io("cannot send the id from", e))?;
        }
        Ok(id)
    } else {
        // Rank 0 may start later: retry for up to five minutes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            match std::net::TcpStream::connect(&launch.master) {
                Ok(mut stream) => {
                    let mut id = [0u8; 128];
                    stream
                        .read_exact(&mut id)
                        .map_err(|e| io("cannot read the id from", e))?;
                    return Ok(id);
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(io("gave up reaching rank 0 at", e));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
}

#[cfg(feature = "nccl")]
pub use nccl::Nccl;

#[cfg(feature = "nccl")]
mod nccl {
    //! NCCL's all-reduce on candle's CUDA tensors.
    use std::sync::{Arc, Mutex};

    use candle_core::{
        CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor,
        backend::BackendStorage,
        cuda::{
            CudaStorage,
            cudarc::nccl::safe::{Comm, Id, ReduceOp},
        },
    };
    use sdeflow_kernel::{Error, Result};

    use super::{Launch, Reduce};

    /// The communicator, used by one thread at a time.
    struct Held(Comm);

    // SAFETY: NCCL allows a communicator to be used from any thread as long as calls on it do
    // not overlap; every use goes through the `Mutex` around it.
    #[allow(unsafe_code)]
    unsafe impl Send for Held {}

    /// One rank of a data-parallel run over NCCL (one process per GPU).
    pub struct Nccl {
        comm: Arc<Mutex<Held>>,
        rank: usize,
        world: usize,
    }

    impl std::fmt::Debug for Nccl {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Nccl(rank {} of {})", self.rank, self.world)
        }
    }

    impl Nccl {
        /// Joins the launch's NCCL communicator on `device` (`cuda:LOCAL_RANK`): rank 0 makes
        /// the unique id and hands it to the others ([`super::rendezvous`]).
        pub fn join(launch: &Launch, device: &Device) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                return Err(Error::invalid(
                    "train",
                    "device",
                    "a data-parallel run over NCCL trains on cuda:LOCAL_RANK; pass --device cuda:0 or leave the device to the launch",
                ));
            };
            let nccl = |e: candle_core::cuda::cudarc::nccl::result::NcclError| {
                Error::Msg(format!("NCCL: {e:?}"))
            };
            let id = if launch.rank == 0 {
                let id = Id::new().map_err(nccl)?;
                Some(id.internal().map(|c| c as u8))
            } else {
                None
            };
            let bytes = super::rendezvous(launch, id)?;
            let id = Id::uninit(bytes.map(|b| b as _));
            let comm =
                Comm::from_rank(cuda.cuda_stream(), launch.rank, launch.world, id).map_err(nccl)?;
            Ok(Self {
                comm: Arc::new(Mutex::new(Held(comm))),
                rank: launch.rank,
                world: launch.world,
            })
        }
    }

    impl Reduce for Nccl {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world(&self) -> usize {
            self.world
        }
        fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
            let op = AllReduce {
                comm: self.comm.clone(),
            };
            Ok(x.contiguous()?.apply_op1_no_bwd(&op)?)
        }
    }

    struct AllReduce {
        comm: Arc<Mutex<Held>>,
    }

    impl CustomOp1 for AllReduce {
        fn name(&self) -> &'static str {
            "nccl-all-reduce-sum"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL reduces CUDA tensors; this one is on the CPU")
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (start, end) = l
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("all-reduce of a strided tensor".into()))?;
            let comm = self
                .comm
                .lock()
                .map_err(|_| candle_core::Error::Msg("the NCCL communicator is poisoned".into()))?;
            let device = s.device().clone();
            let failed = |e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}"));
            let out = match s.dtype() {
                DType::F32 => {
                    let src = s.as_cuda_slice::<f32>()?.slice(start..end);
                    let mut dst = device.alloc_zeros::<f32>(end - start)?;
                    comm.0
                        .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                        .map_err(failed)?;
                    CudaStorage::wrap_cuda_slice(dst, device)
                }
                DType::F64 => {
                    let src = s.as_cuda_slice::<f64>()?.slice(start..end);
                    let mut dst = device.alloc_zeros::<f64>(end - start)?;
                    comm.0
                        .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                        .map_err(failed)?;
                    CudaStorage::wrap_cuda_slice(dst, device)
                }
                other => candle_core::bail!("all-reduce of {other:?}: f32 or f64"),
            };
            Ok((out, l.shape().clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_read_from_torchrun_and_slurm_variables() -> Result<()> {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Launch::from_env(env(&[]))?, None);
        let torchrun = Launch::from_env(env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
        ]))?;
        assert_eq!(
            torchrun,
            Some(Launch {
                rank: 3,
                world: 4,
                local_rank: 1,
                gpu: 1,
                master: "node7:29501".into()
            })
        );
        let slurm = Launch::from_env(env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "1234"),
        ]))?
        .expect("a launch");
        assert_eq!((slurm.rank, slurm.world, slurm.local_rank), (1, 2, 1));
        let bound = Launch::from_env(env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("CUDA_VISIBLE_DEVICES", "3"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "1234"),
            ("SDEFLOW_RENDEZVOUS_PORT", "4000"),
        ]))?
        .expect("a launch");
        assert_eq!((bound.gpu, bound.master.as_str()), (0, "n1:4000"));
        // A one-task Slurm job (an array task, say) is a single process.
        assert_eq!(
            Launch::from_env(env(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]))?,
            None
        );
        for (bad, var) in [
            (&[("WORLD_SIZE", "2")][..], "RANK"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")][..], "RANK"),
            (&[("WORLD_SIZE", "2"), ("RANK", "x")][..], "RANK"),
            (&[("WORLD_SIZE", "2"), ("RANK", "1")][..], "MASTER_ADDR"),
        ] {
            let pairs: Vec<(String, String)> = bad
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let e =
                Launch::from_env(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                    .expect_err("a bad launch");
            assert!(e.to_string().contains(var), "{e}");
        }
        Ok(())
    }

    /// Rank 0 hands its id to three others over TCP on the loopback.
    #[test]
    fn rank_zero_hands_the_id_to_every_rank() -> Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Msg(e.to_string()))?
            .port();
        let id: [u8; 128] = std::array::from_fn(|i| (i * 7) as u8);
        let got = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|rank| {
                    s.spawn(move || {
                        let launch = Launch {
                            rank,
                            world: 4,
                            local_rank: rank,
                            gpu: rank,
                            master: format!("127.0.0.1:{port}"),
                        };
                        rendezvous(&launch, (rank == 0).then_some(id))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect::<Result<Vec<_>>>()
        })?;
        assert!(got.iter().all(|g| *g == id));
        Ok(())
    }

    #[test]
    fn threads_sum_in_rank_order_and_every_rank_gets_the_same_bits() -> Result<()> {
        let group = Threads::group(3);
        let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|r| {
                    s.spawn(move || -> Result<Vec<f32>> {
                        let x = Tensor::new(
                            &[0.1f32 * (r.rank() + 1) as f32, 1e-8, -3.0],
                            &candle_core::Device::Cpu,
                        )?;
                        Ok(r.all_reduce_sum(&x)?.to_vec1::<f32>()?)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect::<Result<Vec<_>>>()
        })?;
        assert_eq!(sums[0], sums[1]);
        assert_eq!(sums[0], sums[2]);
        assert_eq!(sums[0][0], 0.1f32 + 0.2 + 0.3);
        assert_eq!(sums[0][2], -9.0);
        Ok(())
    }
}
