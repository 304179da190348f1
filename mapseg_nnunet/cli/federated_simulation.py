"""``mapseg_federated_simulation``: Fed-MAPSeg on one machine with Flower's simulation runtime (see
:mod:`mapseg_nnunet.federated.simulation`)."""
from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from typing import List, Optional

import torch

from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name
from mapseg_nnunet.data.target_registry import plans_for_registered_target
from mapseg_nnunet.federated.simulation import LocalFlower, app_config_defaults


def simulation_entry(argv: Optional[List[str]] = None) -> None:
    defaults = app_config_defaults()
    parser = argparse.ArgumentParser(
        description="Fed-MAPSeg simulation on this machine: the server trains on the labeled source, one simulated "
                    "client per registered target dataset adapts on it (Flower simulation runtime).")
    parser.add_argument("-s", required=True, help="[REQUIRED] Source dataset name or id (the server's data).")
    parser.add_argument("-t", nargs="+", required=True, help="[REQUIRED] Target datasets, one client each "
                                                             "(registered to the source with the same plans).")
    parser.add_argument("-p", default=defaults["plans"], help=f"Plans identifier. Default: {defaults['plans']}")
    parser.add_argument("-c", default=defaults["configuration"],
                        help=f"Configuration. Default: {defaults['configuration']}")
    parser.add_argument("-f", default=defaults["fold"],
                        help=f"Source fold (its validation cases give the Score). Default: {defaults['fold']}")
    parser.add_argument("-tr", default=defaults["server-trainer"],
                        help=f"Server trainer: rounds, steps and learning rates. Default: {defaults['server-trainer']}")
    parser.add_argument("-pretrained_weights", default="", help="Initial weights, e.g. the MAE checkpoint.")
    parser.add_argument("-device", default=defaults["device"], help=f"cpu, cuda or auto. Default: {defaults['device']}")
    parser.add_argument("--cpus_per_client", type=int, default=1,
                        help="CPU cores Ray reserves per simulated client (how many run at once). Default: 1")
    parser.add_argument("--workdir", help="Where Flower's logs and state go. Default: a temporary folder.")
    args = parser.parse_args(argv)
    try:  # each client builds its trainer from its target's copy of the plans
        for target in args.t:
            plans_for_registered_target(args.s, target, args.p, args.c)
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="mapseg_fed_")
    run_config = {"source": str(args.s), "clients": " ".join(args.t), "plans": args.p, "configuration": args.c,
                  "fold": str(args.f), "server-trainer": args.tr, "min-clients": len(args.t),
                  "device": args.device, "pretrained-weights": os.path.abspath(args.pretrained_weights)
                  if args.pretrained_weights else ""}
    federation = {"num-supernodes": len(args.t), "client-resources-num-cpus": args.cpus_per_client}
    print(f"Fed-MAPSeg simulation: server on {args.s}, clients {', '.join(args.t)}; Flower logs in {workdir}")
    started = time.time()
    with LocalFlower(workdir) as flower:
        flower.start_superlink(simulation=True)
        result = flower.run(run_config, federation)
    # `flwr run --stream` exits 0 even when the run failed: the server's final checkpoint tells, when this run wrote
    # it or an earlier run of this server trainer did (not the model a federation was started from)
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    final = os.path.join(get_output_folder(dataset_name(args.s), args.tr, args.p, args.c, args.f),
                         "checkpoint_final.pth")
    if result.returncode != 0 or not os.path.isfile(final) or (
            os.path.getmtime(final) < started and
            torch.load(final, map_location="cpu", weights_only=False).get("trainer_name") != args.tr):
        logs = sorted(glob.glob(os.path.join(os.path.dirname(final), "training_log_*.txt")))
        errors = [line.strip() for line in (open(logs[-1]) if logs else []) if "ERROR: " in line]
        raise SystemExit(f"ERROR: the federation did not finish ({final} not written)" +
                         (f": {errors[-1].split('ERROR: ', 1)[1]}" if errors else "") + f"; Flower logs in {workdir}")
    print(f"Global model: {final}")
