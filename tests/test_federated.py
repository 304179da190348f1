"""Fed-MAPSeg on Flower: a real loopback deployment (SuperLink + SuperNodes as separate processes, one of them
broken; the paper's network), the one-command simulation (the GLC ResEnc U-Net), what crosses the wire, resuming
the server, and stock nnUNetv2_predict on the global model. Synthetic source 931 (labeled), client targets 932
(3 cases) and 933 (5 cases)."""
import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_fixtures import nnunet_env, run, with_ext_trainer

SERVER = "nnUNetTrainerMAPSegFed_smoke"
PLANS = "MAPSegPlansCPU"
UNET_PLANS = "MAPSegResEncPlansCPU"  # nnU-Net's z-scored data: preprocessed and registered on its own
CASES = {"932": 3, "933": 5}


@pytest.fixture(scope="module")
def fed_cohort(tmp_path_factory):
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    root = tmp_path_factory.mktemp("federation")
    env = with_ext_trainer(nnunet_env(root))
    write_synthetic_dataset(env["nnUNet_raw"], 931, name="FedSource")
    for dataset, cases in CASES.items():
        write_synthetic_dataset(env["nnUNet_raw"], int(dataset), name=f"FedSite{dataset}", labeled=False,
                                seed=int(dataset), num_cases=cases)
    run(["mapseg_plan_and_preprocess", "-d", "931", "-pl", "MAPSegPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    run(["mapseg_register_targets", "-s", "931", "-t", *CASES, "-p", PLANS, "--no_pbar"], env, cwd=root)
    run(["mapseg_plan_and_preprocess", "-d", "931", "-pl", "MAPSegResEncPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    run(["mapseg_register_targets", "-s", "931", "-t", *CASES, "-p", UNET_PLANS, "--no_pbar"], env, cwd=root)
    return root, env


def _server_folder(env, plans=PLANS):
    return os.path.join(env["nnUNet_results"], "Dataset931_FedSource", f"{SERVER}__{plans}__3d_fullres", "fold_0")


def _server_log(env, plans=PLANS):
    return "".join(open(f).read() for f in glob.glob(os.path.join(_server_folder(env, plans), "training_log_*.txt")))


def test_loopback_deployment_tolerates_a_broken_site_and_sends_only_weights_and_scalars(fed_cohort, tmp_path):
    from mapseg_nnunet.federated.simulation import LocalFlower
    root, env = fed_cohort
    env = {**env, "nnUNet_results": str(tmp_path / "results")}
    plans = PLANS + "_1round"  # one round here (a process per client and round); the simulation test runs two
    for dataset in ("931", *CASES):
        run(["mapseg_plans_variant", "-d", dataset, "-p", PLANS, "-o", plans, "--overwrite", "--set", "num_epochs=1"],
            env, cwd=root)
    audit = {d: str(tmp_path / f"audit_{d}.jsonl") for d in CASES}
    with LocalFlower(str(tmp_path / "flower")) as flower:
        flower.env.update(env)
        flower.start_superlink(simulation=False)
        for dataset in CASES:
            flower.start_supernode(f"site{dataset}", {"dataset": dataset, "audit-log": audit[dataset]})
        flower.start_supernode("site_broken", {"dataset": "999"})  # no such dataset: fails every round
        result = flower.run({"source": "931", "plans": plans, "server-trainer": SERVER, "min-clients": 3,
                             "device": "cpu", "round-timeout": 600.0}, timeout=1200)
    assert result.returncode == 0
    final = torch.load(os.path.join(_server_folder(env, plans), "checkpoint_final.pth"), map_location="cpu",
                       weights_only=False)
    assert final["current_epoch"] == 1
    log = _server_log(env, plans)
    for r in range(1):
        assert f"round {r}: 2 client(s)" in log
        assert f"round {r}: client node" in log and "missing" in log

    network = final["network_weights"]
    for dataset, path in audit.items():
        entries = [json.loads(line) for line in open(path)]
        assert [e["direction"] for e in entries] == ["in", "out"]
        for entry in entries:
            kinds = {name: record["kind"] for name, record in entry["records"].items()}
            assert kinds == ({"arrays": "arrays", "config": "config"} if entry["direction"] == "in"
                             else {"arrays": "arrays", "metrics": "metrics"})
            # the arrays are exactly the network's weights: no voxel, no label
            assert entry["records"]["arrays"]["arrays"] == {k: list(v.shape) for k, v in network.items()}
            scalars = entry["records"]["config" if entry["direction"] == "in" else "metrics"]["values"]
            assert all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in scalars.values())
            if entry["direction"] == "out":
                assert scalars["num-examples"] == CASES[dataset]  # FedAvg weight = the site's case count
            else:
                assert set(scalars) == {"lr", "iterations", "global-round", "server-round"}


def test_simulation_command_and_stock_prediction(fed_cohort, tmp_path):
    """On the GLC ResEnc U-Net (the paper's network is federated by the loopback deployment above)."""
    root, env = fed_cohort
    plans = UNET_PLANS
    env = {**env, "nnUNet_results": str(tmp_path / "results")}
    run(["mapseg_federated_simulation", "-s", "931", "-t", *CASES, "-p", plans, "-tr", SERVER, "-device", "cpu",
         "--workdir", str(tmp_path / "flower")], env, cwd=root, timeout=1200)
    final = torch.load(os.path.join(_server_folder(env, plans), "checkpoint_final.pth"), map_location="cpu",
                       weights_only=False)
    assert final["current_epoch"] == 2 and len(final["mapseg"]["score_history"]) == 2
    assert all(f"round {r}: 2 client(s)" in _server_log(env, plans) for r in range(2))
    assert "fusion.weight" in final["network_weights"]  # the GLC U-Net was federated
    image = os.path.join(env["nnUNet_raw"], "Dataset932_FedSite932", "imagesTr", "case000_0000.nii.gz")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    os.symlink(image, inp / "case000_0000.nii.gz")
    run(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", "931", "-c", "3d_fullres", "-tr", SERVER, "-p",
         plans, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta"], env, cwd=root)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case000.nii.gz")))
    assert pred.shape == sitk.GetArrayFromImage(sitk.ReadImage(image)).shape and set(np.unique(pred)) <= {0, 1, 2}


def test_a_round_without_any_client_stops_the_federation_with_the_clients_error(fed_cohort, tmp_path):
    """Every client fails (its plans carry a server-only setting): no global model is written, and the command
    says why instead of calling a source-only model federated."""
    root, env = fed_cohort
    env = {**env, "nnUNet_results": str(tmp_path / "results")}
    plans = PLANS + "_badClients"
    run(["mapseg_plans_variant", "-d", "931", "-p", PLANS, "-o", plans, "--overwrite", "--set", "num_epochs=1"], env,
        cwd=root)
    for dataset in CASES:
        run(["mapseg_plans_variant", "-d", dataset, "-p", PLANS, "-o", plans, "--overwrite", "--set",
             "client_iterations=2"], env, cwd=root)
    proc = run(["mapseg_federated_simulation", "-s", "931", "-t", *CASES, "-p", plans, "-tr", SERVER, "-device", "cpu",
                "--workdir", str(tmp_path / "flower")], env, cwd=root, check=False, timeout=1200)
    assert proc.returncode != 0
    assert "no client answered" in proc.stderr and "unknown trainer setting 'client_iterations'" in proc.stderr
    assert not os.path.isfile(os.path.join(_server_folder(env, plans), "checkpoint_final.pth"))
    # started from a source-only model's final checkpoint (copied in, resumed): that file is not the global model
    source_only = {"current_epoch": 0, "trainer_name": "nnUNetTrainerMAPSegUDA_noMPL"}
    torch.save(source_only, os.path.join(_server_folder(env, plans), "checkpoint_final.pth"))
    proc = run(["mapseg_federated_simulation", "-s", "931", "-t", *CASES, "-p", plans, "-tr", SERVER, "-device", "cpu",
                "--workdir", str(tmp_path / "flower2")], env, cwd=root, check=False, timeout=1200)
    assert proc.returncode != 0 and "did not finish" in proc.stderr and "Global model" not in proc.stdout


def test_server_resumes_after_its_last_completed_round(fed_cohort, tmp_path, monkeypatch):
    """Rounds without Flower: the server's round, a fake aggregate, a checkpoint; a restarted server continues
    from that round with that global model."""
    root, env = fed_cohort
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_extTrainer", "nnUNet_n_proc_DA", "nnUNet_compile"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    from mapseg_nnunet.federated.sites import start_server
    server = start_server("931", SERVER, PLANS, "3d_fullres", "0", torch.device("cpu"))
    assert server.current_epoch == 0
    teacher = server.begin_round()
    aggregate = {k: v + 0.01 if v.dtype.is_floating_point else v for k, v in teacher.items()}
    server.end_round(aggregate, client_mpl=0.5)
    assert server.current_epoch == 1 and server.score_history[-1]["client_mpl"] == 0.5
    del server  # the server dies during round 2
    restarted = start_server("931", SERVER, PLANS, "3d_fullres", "0", torch.device("cpu"))
    assert restarted.current_epoch == 1
    weights = restarted.network.state_dict()
    assert all(torch.equal(weights[k], aggregate[k].to(weights[k].dtype)) for k in aggregate)
    # a trainer without the federation's hooks is refused by name, before anything trains
    from mapseg_nnunet.federated.sites import client_round
    with pytest.raises(TypeError, match="nnUNetTrainerMAPSegUDA_smoke cannot be a federation's server: it lacks "
                                        "round_lr, begin_round, end_round"):
        start_server("931", "nnUNetTrainerMAPSegUDA_smoke", PLANS, "3d_fullres", "0", torch.device("cpu"))
    with pytest.raises(TypeError, match="cannot be a federation's client: it lacks client_round"):
        client_round("932", PLANS, "3d_fullres", aggregate, 1e-3, 1, torch.device("cpu"), SERVER)


def test_clients_need_targets_registered_with_the_plans_or_their_data(fed_cohort, monkeypatch):
    root, env = fed_cohort
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    from mapseg_nnunet.data.errors import DatasetError
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    from mapseg_nnunet.data.target_registry import plans_for_registered_target
    # a plans variant made on the source only shares the data 932 was registered with: the client's copy is written
    variant = UNET_PLANS + "_sourceOnlyVariant"
    run(["mapseg_plans_variant", "-d", "931", "-p", UNET_PLANS, "-o", variant, "--set", "num_epochs=1"], env, cwd=root)
    target_copy = os.path.join(env["nnUNet_preprocessed"], "Dataset932_FedSite932", variant + ".json")
    assert not os.path.exists(target_copy)
    path = plans_for_registered_target("931", "932", variant)
    plans = json.load(open(path))
    assert path == target_copy and plans["dataset_name"] == "Dataset932_FedSite932" and plans["plans_name"] == variant
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == UNET_PLANS + "_3d_fullres"
    # a dataset nobody registered is refused with the command that registers it
    write_synthetic_dataset(env["nnUNet_raw"], 934, name="FedSiteUnregistered", labeled=False, seed=934,
                            num_cases=2)
    with pytest.raises(DatasetError, match="run mapseg_register_targets -s 931 -t 934 -p MAPSegResEncPlansCPU"):
        plans_for_registered_target("931", "934", UNET_PLANS)
    proc = run(["mapseg_federated_simulation", "-s", "931", "-t", "932", "934", "-p", UNET_PLANS,
                "-tr", SERVER, "-device", "cpu"], env, cwd=root, check=False)
    assert proc.returncode != 0 and "ERROR: Dataset934_FedSiteUnregistered is not registered" in proc.stderr
