"""Run a preset on a SLURM cluster: dask-jobqueue starts the workers as SLURM jobs, pai sends
one task per run to them.

Each SLURM job is one dask worker process with one GPU (`--gres=gpu:1`, declared to dask as
the resource `GPU=1`, so pai's training tasks go one per GPU). The run store (the preset's
`--out` folders) and the data root must be on a filesystem every node mounts; this script
runs where you start it (a login node), as the client: it plans, submits, and rebuilds the
tables from the store when the workers are done. A worker killed by the time limit or by
preemption has its task retried on another; the run resumes from its last checkpoint.

    pip install -e ".[dask]"
    python benchmarks/cluster/slurm_preset.py benchmarks/presets/compare-lenet300.toml \
        --jobs 8 --queue gpu --walltime 04:00:00 --data-root /shared/data
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="preset TOML file (benchmarks/presets/)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs: one worker, one GPU each")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--walltime", default="04:00:00", help="time limit of each job")
    parser.add_argument("--cores", type=int, default=4, help="CPU cores per job")
    parser.add_argument("--memory", default="16GB", help="memory per job")
    parser.add_argument(
        "--gpus", type=int, default=1, help="1: one GPU per job (default); 0: CPU workers"
    )
    parser.add_argument("--data-root", required=True, help="the datasets, on a shared filesystem")
    args = parser.parse_args(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print('this script needs dask-jobqueue: pip install -e ".[dask]"', file=sys.stderr)
        return 2
    from distributed import Client

    from pai.cli import main as pai

    gpu = ["--gres=gpu:1"] if args.gpus else []
    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=1,  # one task at a time per worker: one training per GPU
        job_cpu=args.cores,  # the job's CPUs, for the worker's own threads (torch, I/O)
        processes=1,  # one worker process per job, owning the job's GPU
        memory=args.memory,
        walltime=args.walltime,
        job_extra_directives=gpu,
        worker_extra_args=["--resources", "GPU=1"] if args.gpus else [],
        job_script_prologue=[f"export PAI_DATA_ROOT={args.data_root}"],
    )
    cluster.scale(jobs=args.jobs)
    print(cluster.job_script(), file=sys.stderr)
    try:
        # pai asks for the GPU resource only once some worker has declared it
        with Client(cluster) as client:
            client.wait_for_workers(1)
        return pai(["preset", args.preset, "--scheduler", cluster.scheduler_address,
                    "--data-root", args.data_root])  # fmt: skip
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
