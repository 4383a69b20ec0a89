"""Config loading: embedded defaults, overlays, and one clear error per mistake."""

from pathlib import Path

import pytest

from engine import config


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "berth.toml"
    p.write_text(text)
    return str(p)


def test_defaults_need_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load(None)
    assert cfg.state_dir == "/var/lib/berth"
    assert cfg.socket_path == "/run/berth/berth.sock"
    assert cfg.cni.default_subnet == "10.88.0.0/16"
    assert cfg.metrics.address == "127.0.0.1:9323"


def test_shipped_default_file_equals_embedded_defaults():
    shipped = config.load(str(Path(__file__).parents[2] / "deploy" / "berth.toml"))
    assert shipped == config.Config()


def test_overlay(tmp_path):
    cfg = config.load(write(tmp_path, 'run_dir = "/tmp/r"\n[registry]\nprogress_timeout = 7\n'
                                      'insecure = ["reg.local:5000"]\n'))
    assert cfg.socket_path == "/tmp/r/berth.sock"
    assert cfg.registry.progress_timeout == 7.0
    assert cfg.registry.insecure == ["reg.local:5000"]


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown config key 'bogus'"),
    ("[cni]\nbogus = 1\n", "unknown config key 'cni.bogus'"),
    ("log_level = 3\n", "'log_level' must be str"),
    ("log_level = \"loud\"\n", "log_level must be one of"),
    ("state_dir = \"relative\"\n", "state_dir must be an absolute path"),
    ("cni = 1\n", "'cni' must be a table"),
    ("[cni]\ndefault_subnet = \"10.88.0.0/33\"\n", "cni.default_subnet"),
    ("[metrics]\naddress = \"nonsense\"\n", "metrics.address must be HOST:PORT"),
    ("[registry]\nmax_concurrent_downloads = 0\n", "at least 1"),
    ("[registry]\nmax_concurrent_downloads = true\n", "must be int"),
    ("[runtime]\ncgroup_driver = \"systemd\"\n", "only \"cgroupfs\""),
    ("[docker]\nnetwork_pool = \"10.91.0.0/33\"\n", "docker.network_pool"),
    ("[docker]\nnetwork_pool = \"fd00::/48\"\n", "docker.network_pool"),
    ("[docker]\nnetwork_pool_size = 8\n", "network_pool_size"),
    ("[docker]\nnetwork_pool_size = 31\n", "network_pool_size"),
    ("[docker]\ndns_forward = \"yes\"\n", "must be bool"),
    ("this is [not toml\n", "is not valid TOML"),
])
def test_bad_config_names_the_problem(tmp_path, text, message):
    with pytest.raises(config.ConfigError, match=None) as info:
        config.load(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"))
