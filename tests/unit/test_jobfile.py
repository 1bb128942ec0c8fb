"""Job files: keys named like submit's long options, paths relative to the file, clear refusals."""

from pathlib import Path

import pytest

from pack_manager.jobfile import KEYS, JobFileError, load_job_file
from pack_manager.requirements import WorkloadRequirements

EXAMPLES = Path(__file__).parents[2] / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_the_shipped_examples_load_and_their_requirements_parse():
    hello = load_job_file(EXAMPLES / "hello-wasm" / "job.toml")
    assert hello["context"] == (EXAMPLES / "hello-wasm").resolve()
    assert (hello["kind"], hello["module"]) == ("wasm", "hello.wat")
    inference = load_job_file(EXAMPLES / "inference" / "job.toml")
    assert inference["input"] == [(EXAMPLES / "inference" / "prompts.jsonl").resolve()]
    assert inference["cmd"][0] == "python3" and inference["env"] == {"BATCH_SIZE": "32"}
    assert inference["placement_key"] == "prompts-2026-12"  # placement-key and placement_key alike
    req = WorkloadRequirements.from_human(
        cpu=inference["cpu"],
        memory=inference["memory"],
        gpu=inference["gpu"],
        select=inference["select"],
        capabilities=inference["capability"],
        region=inference["region"],
    )
    assert req.capabilities == ("inference:llama3",) and req.region == "eu-west"


def test_paths_are_relative_to_the_file_and_shapes_are_normalised(tmp_path):
    options = load_job_file(
        write(
            tmp_path,
            'context = "ctx"\ninput = "a.txt"\ncmd = "echo \'two words\'"\nlabel = { zone = "a" }\n'
            'prefer = ["rack=1"]\nselect = "gpu>1"\nreplicas = 2\nnetwork = true\n',
        )
    )
    assert options == {
        "context": tmp_path.resolve() / "ctx",
        "input": [tmp_path.resolve() / "a.txt"],
        "cmd": ["echo", "two words"],
        "label": ["zone=a"],
        "prefer": ["rack=1"],
        "select": ["gpu>1"],
        "replicas": 2,
        "network": True,
    }


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("colour = 3", "unknown key 'colour'"),
        ("kind = 3", "kind: expected text"),
        ('replicas = "2"', "replicas: expected an integer"),
        ('network = "yes"', "network: expected true or false"),
        ("input = [1]", "input: expected text or a list of text"),
        ("env = { A = 1 }", "env: expected a table"),
        ('cmd = "unclosed \'quote"', "cmd: No closing quotation"),
        ("kind = ", "not valid TOML"),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_naming_the_key(tmp_path, text, fragment):
    with pytest.raises(JobFileError, match=fragment):
        load_job_file(write(tmp_path, text))


def test_every_key_is_a_submit_option():
    from cli.jobs import SUBMIT_DEFAULTS

    assert set(KEYS) == set(SUBMIT_DEFAULTS)
