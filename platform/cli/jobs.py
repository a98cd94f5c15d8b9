"""`audiostyle jobs list|status|logs|stop`: follow the Ray Jobs that `audiostyle submit` started."""

from __future__ import annotations

import argparse
import os

EPILOG = """\
examples:
  audiostyle jobs list --address http://10.0.0.5:8265
  audiostyle jobs status raysubmit_XXXX --address http://10.0.0.5:8265
  audiostyle jobs logs raysubmit_XXXX --follow --address http://10.0.0.5:8265
  audiostyle jobs stop raysubmit_XXXX --address http://10.0.0.5:8265
The address defaults to $RAY_API_SERVER_ADDRESS.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list, follow and stop the Ray Jobs of a cluster",
                       description="List, follow and stop Ray Jobs (see `audiostyle submit`).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "status", "logs", "stop"), help="what to do")
    p.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the job (status, logs, stop)")
    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"), metavar="http://HEAD:8265",
                   help="the cluster's dashboard (Jobs API); default $RAY_API_SERVER_ADDRESS")
    p.add_argument("--follow", action="store_true", help="logs: keep printing until the job ends")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.training import jobs

    if not args.address:
        raise ConfigError("no cluster given", path="--address", hint="--address http://HEAD:8265, or set "
                                                                     "RAY_API_SERVER_ADDRESS")
    if args.action == "list":
        rows = jobs.list_jobs(args.address)
        print(jobs.format_jobs(rows) if rows else f"no jobs on {args.address}")
        return 0
    if not args.job_id:
        raise ConfigError(f"`jobs {args.action}` needs a JOB_ID", path="JOB_ID",
                          hint=f"`audiostyle jobs list --address {args.address}` shows them")
    if args.action == "status":
        print(jobs.job_status(args.address, args.job_id))
    elif args.action == "logs":
        jobs.job_logs(args.address, args.job_id, follow=args.follow, write=lambda text: print(text, end="", flush=True))
    else:
        status = jobs.stop_job(args.address, args.job_id)
        print(f"job {args.job_id}: {status}")
        return 0 if status in jobs.FINISHED else 1
    return 0
