"""Bad input at the command line gets a clear message and exit code 2, never a traceback."""

from __future__ import annotations

import pandas as pd


def test_unknown_use_case_without_contract(tmp_path, invoke):
    code, out = invoke(["data", "split", "--use-case", "nope", "--state-dir", "s"], tmp_path)
    assert code == 2 and "contract file" in out and "does not exist" in out


def test_bad_override_names_the_field(tmp_path, invoke):
    code, out = invoke(["run", "--use-case", "churn", "--set", "training.rounds=0"], tmp_path)
    assert code == 2 and "training.rounds" in out and "Traceback" not in out


def test_unknown_config_key(tmp_path, invoke):
    code, out = invoke(["run", "--set", "training.epochs=3"], tmp_path)
    assert code == 2 and "training.epochs" in out


def test_wrong_separator_in_own_export(tmp_path, invoke):
    frame = pd.DataFrame({"customerID": ["a"], "Churn": ["No"]})
    frame.to_csv(tmp_path / "export.csv", sep=";", index=False)
    code, out = invoke(["data", "split", "--use-case", "churn", "--input", "export.csv", "--state-dir", "s"], tmp_path)
    assert code == 2 and "';'-separated" in out and "source.separator" in out


def test_contract_naming_a_column_that_does_not_exist(tmp_path, invoke):
    (tmp_path / "c.yaml").write_text(
        "use_case: mine\nid_column: id\ntarget: {column: y, positive: '1', negative: '0'}\n"
        "numeric: {agee: {dtype: int}}\n"
    )
    pd.DataFrame({"id": ["a", "b"], "y": ["0", "1"], "age": ["30", "40"]}).to_csv(tmp_path / "x.csv", index=False)
    code, out = invoke(["data", "split", "--use-case", "mine", "--contract", "c.yaml", "--input", "x.csv", "--state-dir", "s"], tmp_path)
    assert code == 2 and "['agee']" in out and "did you mean 'age'" in out


def test_missing_input_file(tmp_path, invoke):
    code, out = invoke(["data", "split", "--use-case", "churn", "--input", "nowhere.csv", "--state-dir", "s"], tmp_path)
    assert code == 2 and "does not exist" in out and "nowhere.csv" in out


def test_unknown_split_strategy(tmp_path, invoke):
    code, out = invoke(["data", "split", "--use-case", "churn", "--strategy", "random", "--state-dir", "s"], tmp_path)
    assert code == 2 and "unknown strategy" in out


def test_split_then_expectations_generate(tmp_path, invoke):
    code, out = invoke(["data", "split", "--use-case", "churn", "--state-dir", "s", "--strategy", "covariate", "--by", "PaymentMethod"], tmp_path)
    assert code == 0, out
    assert {p.name for p in (tmp_path / "s" / "regions").iterdir()} == {"eu", "us", "apac"}
    code, out = invoke(["expectations", "generate", "--use-case", "churn", "--out", "exp"], tmp_path)
    assert code == 0 and (tmp_path / "exp" / "churn.json").is_file()


def test_split_refuses_a_region_value_that_is_a_path_and_writes_nothing(tmp_path, invoke):
    (tmp_path / "c.yaml").write_text(
        "use_case: mine\nid_column: id\nregion_column: region\ntarget: {column: y, positive: '1', negative: '0'}\n"
        "numeric: {age: {dtype: int}}\n"
    )
    frame = pd.DataFrame({"id": list("abcd"), "y": ["0", "1", "0", "1"], "age": ["30", "40", "50", "60"],
                          "region": ["eu", "../coordinator", "../../escape", "us"]})
    frame.to_csv(tmp_path / "x.csv", index=False)
    code, out = invoke(["data", "split", "--use-case", "mine", "--contract", "c.yaml", "--input", "x.csv",
                        "--state-dir", "state"], tmp_path)
    assert code == 2 and "Traceback" not in out
    assert "'../coordinator'" in out and "nothing was written" in out
    assert not (tmp_path / "state" / "regions").exists() and not (tmp_path / "state" / "coordinator").exists()
    assert not (tmp_path / "escape").exists()
