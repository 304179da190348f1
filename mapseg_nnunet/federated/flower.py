"""Fed-MAPSeg on Flower's Message API: ``server_app`` (a ``FedAvg`` subclass that trains the server on the source
before each broadcast), ``client_app`` (one round of Eq. 10 at a site) and ``wire_audit_mod`` (what crosses the
wire, per site). Settings come from the run config (``[tool.flwr.app.config]`` of ``app/pyproject.toml``,
``flwr run --run-config``); the site's target dataset from its node config (``flower-supernode --node-config
"dataset=952"``) or, in a simulation, from the run config's ``clients`` list by partition id."""
from __future__ import annotations

import json
import re
import time
from logging import INFO, WARNING
from typing import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from mapseg_nnunet.federated.simulation import app_config_defaults
from mapseg_nnunet.federated.sites import client_round, finish_server, resolve_device, start_server


def settings(context: Context) -> dict:
    """The run config; ``flwr run`` fills it from the app's ``[tool.flwr.app.config]`` (the one place of the
    defaults), other runtimes may leave keys out."""
    return {**app_config_defaults(), **dict(context.run_config)}


def error_line(reason: str) -> str:
    """The last ``SomeError: message`` line of a client's error report (Flower and Ray wrap it in their
    tracebacks); the last line when there is none."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    for line in reversed(lines):
        found = re.search(r"\w*(Error|Exception): \S", line)
        if found:
            return line[found.start():]
    return lines[-1] if lines else str(reason)


class FedMAPSeg(FedAvg):
    """Algorithm 1 with Flower's FedAvg: ``configure_train`` runs the server's round on the source and
    broadcasts its EMA teacher with the round's learning rate and client steps; the clients' teachers come back
    weighted by ``num-examples`` (their case counts), FedAvg averages them, ``aggregate_train`` hands the average
    to the server trainer as the new global student and logs which clients were missing."""

    def __init__(self, server, **kwargs):
        super().__init__(fraction_evaluate=0.0, **kwargs)  # evaluation is server-side, on the source
        self.server = server
        self._sent: dict = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        teacher = self.server.begin_round()
        config["lr"] = float(self.server.round_lr)
        config["iterations"] = int(self.server.client_iterations)
        config["global-round"] = int(self.server.current_epoch)
        messages = list(super().configure_train(server_round, ArrayRecord(teacher), config, grid))
        self._sent = {m.metadata.dst_node_id: m for m in messages}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        answered = {m.metadata.src_node_id for m in replies if not m.has_error()}
        missing = sorted(set(self._sent) - answered)
        reasons = []
        for node in missing:
            failed = [m for m in replies if m.metadata.src_node_id == node]
            reasons.append(error_line(failed[0].error.reason) if failed else "no reply before the round timeout")
            message = f"round {self.server.current_epoch}: client node {node} missing ({reasons[-1]})"
            log(WARNING, message)
            self.server.print_to_log_file(f"WARNING: {message}")
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:  # a round without clients would train the source alone and call it federated
            message = (f"round {self.server.current_epoch}: no client answered, the federation stops (client "
                       f"errors: {'; '.join(sorted(set(reasons))) or 'none received'})")
            self.server.print_to_log_file(f"ERROR: {message}")
            raise RuntimeError(message)
        self.server.print_to_log_file(
            f"round {self.server.current_epoch}: {len(answered)} client(s), "
            + ", ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()))
        self.server.end_round(arrays.to_torch_state_dict(), float(metrics["mpl"]))
        return arrays, metrics


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    cfg = settings(context)
    if not cfg["source"]:
        raise ValueError("run config 'source' (the labeled source dataset of the server) is not set")
    server = start_server(str(cfg["source"]), cfg["server-trainer"], cfg["plans"], cfg["configuration"],
                          cfg["fold"], resolve_device(cfg["device"]), cfg["pretrained-weights"] or None)
    remaining = server.num_epochs - server.current_epoch
    if remaining <= 0:
        log(INFO, "The federation already finished (%s has checkpoint_final.pth)", server.output_folder)
        return
    strategy = FedMAPSeg(server, min_train_nodes=int(cfg["min-clients"]),
                         min_available_nodes=int(cfg["min-clients"]))
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    strategy.start(grid=grid, initial_arrays=ArrayRecord(unwrap_network(server.network).state_dict()),
                   num_rounds=remaining, timeout=float(cfg["round-timeout"]), train_config=ConfigRecord())
    finish_server(server)


def site_dataset(context: Context) -> str:
    """The node's target dataset: ``dataset`` of the node config, else the run config's ``clients`` list entry of
    this simulated node's ``partition-id``."""
    if "dataset" in context.node_config:
        return str(context.node_config["dataset"])
    clients = str(settings(context)["clients"]).replace(",", " ").split()
    if "partition-id" not in context.node_config or not clients:
        raise ValueError("this SuperNode has no 'dataset' in its node config (flower-supernode --node-config "
                         "\"dataset=ID\")")
    return clients[int(context.node_config["partition-id"]) % len(clients)]


def wire_audit_mod(msg: Message, context: Context, call_next) -> Message:
    """Logs, per message in and out, every record's kind and content summary (array names and shapes, metric and
    config keys), and appends it as a JSON line to the node config's ``audit-log`` file when one is set."""
    def summary(message: Message, direction: str) -> dict:
        records = {}
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                records[name] = {"kind": "arrays", "arrays": {k: list(a.shape) for k, a in record.items()}}
            elif isinstance(record, MetricRecord):
                records[name] = {"kind": "metrics", "values": {k: v for k, v in record.items()}}
            elif isinstance(record, ConfigRecord):
                records[name] = {"kind": "config", "values": {k: v for k, v in record.items()}}
            else:
                records[name] = {"kind": type(record).__name__}
        return {"time": time.time(), "direction": direction, "type": message.metadata.message_type,
                "bytes": sum(r.count_bytes() for r in message.content.values()), "records": records}

    entries = [summary(msg, "in")]
    reply = call_next(msg, context)
    if not reply.has_error():
        entries.append(summary(reply, "out"))
    for entry in entries:
        log(INFO, "wire %s: %s, %d bytes, records %s", entry["direction"], entry["type"], entry["bytes"],
            {k: v["kind"] for k, v in entry["records"].items()})
    path = context.node_config.get("audit-log")
    if path:
        with open(str(path), "a") as f:
            for entry in entries:
                f.write(json.dumps(entry) + "\n")
    return reply


client_app = ClientApp(mods=[wire_audit_mod])


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    cfg = settings(context)
    round_config = msg.content["config"]
    state, cases, metrics = client_round(site_dataset(context), cfg["plans"], cfg["configuration"],
                                         msg.content["arrays"].to_torch_state_dict(), float(round_config["lr"]),
                                         int(round_config["iterations"]), resolve_device(cfg["device"]),
                                         cfg["client-trainer"])
    return Message(RecordDict({"arrays": ArrayRecord(state),
                               "metrics": MetricRecord({**metrics, "num-examples": cases})}), reply_to=msg)
