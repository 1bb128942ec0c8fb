"""formd.toml keys for jobs: size limits and retention, with defaults, and refused with the
key named when out of range."""

import pytest

from daemon import config
from daemon.config import ConfigError, FormdConfig


def test_job_keys_have_defaults_and_round_trip(tmp_path):
    defaults = FormdConfig(listen="127.0.0.1:7000").validated()
    assert defaults.max_context_bytes == 256 * 1024**2
    assert defaults.max_input_bytes == 1024**3
    assert defaults.job_retention_s == 86_400.0
    chosen = FormdConfig(
        listen="127.0.0.1:7000", max_context_bytes=4096, max_input_bytes=0, job_retention_s=2.5
    ).validated()
    config.save(tmp_path, chosen)
    assert config.load(tmp_path) == chosen


@pytest.mark.parametrize(
    "line, key",
    [
        ("max_context_bytes = 10", "max_context_bytes"),
        ("max_context_bytes = 1e6", "max_context_bytes"),
        ('max_context_bytes = "1MiB"', "max_context_bytes"),
        ("max_input_bytes = -1", "max_input_bytes"),
        ("job_retention_s = 0", "job_retention_s"),
        ('job_retention_s = "1d"', "job_retention_s"),
        ("job_retention_s = 40000000", "job_retention_s"),
    ],
)
def test_bad_job_keys_are_refused_with_the_key_named(tmp_path, line, key):
    (tmp_path / "formd.toml").write_text(f'listen = "127.0.0.1:7000"\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)
    assert key in str(caught.value)
