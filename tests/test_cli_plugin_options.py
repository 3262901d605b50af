"""A third-party training method declares its options; `pai compare --<name>-<option>` sets them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import pai
from pai.cli import build_parser, main
from pai.cli.compare import compare_config
from pai.pruning.masks import Masks, keep_topk, prunable_parameters
from pai.pruning.registry import Scorer, ScoringContext, get_scorer, unregister_scorer
from pai.search.protocol import SearchContext, SearchRequest, TicketSearch
from pai.search.ticket import SearchCost, Ticket

NAME = "row-weighted"


@dataclass(frozen=True)
class RowWeightedOptions:
    power: int = field(default=2, metadata={"help": "exponent of the row weight"})


def row_weighted_scores(model: nn.Module, power: int) -> dict[str, Tensor]:
    """|w| times (output row + 1) ** power: the larger the power, the more later rows keep."""
    scores = {}
    for name, w in prunable_parameters(model).items():
        rows = (torch.arange(w.shape[0], dtype=w.dtype) + 1).reshape(-1, *[1] * (w.dim() - 1))
        scores[name] = w.detach().abs() * rows**power
    return scores


class RowWeighted(Scorer, TicketSearch):
    """A training method in the sense of the protocol (`find` gives the ticket), kept tiny."""

    name = NAME
    description = "magnitude times a power of the row index (a test plugin)"
    needs_data = False
    needs_training = True
    default_rounds = 1
    Options = RowWeightedOptions

    def __init__(self) -> None:
        self.seen: list[RowWeightedOptions] = []

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return row_weighted_scores(model, RowWeightedOptions().power)

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        self.seen.append(request.options)
        model = context.build(request)
        masks = keep_topk(row_weighted_scores(model, request.options.power), request.compression)
        source = {k: v.detach().clone() for k, v in model.state_dict().items()}
        masks.apply(model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return Ticket(masks, state, SearchCost(), source)


@pytest.fixture
def plugin():
    pai.register_scorer(RowWeighted)
    try:
        yield get_scorer(NAME)
    finally:
        unregister_scorer(NAME)


BASE = ["compare", "--model", "lenet300", "--dataset", "mnist", "--compressions", "10",
        "--steps", "5", "--out", "out"]  # fmt: skip


def test_every_registered_method_lists_its_options_in_help(plugin, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--row-weighted-power POWER exponent of the row weight (default: 2)" in help_text
    assert "--imp-rate" in help_text and "--earlybird-epsilon" in help_text


def test_only_the_selected_methods_options_reach_the_config(plugin):
    parser = build_parser()
    args = parser.parse_args([*BASE, "--methods", f"magnitude,{NAME}", "--row-weighted-power", "5"])
    assert compare_config(args).options == {NAME: {"power": 5}}
    args = parser.parse_args([*BASE, "--methods", NAME])
    assert compare_config(args).options == {NAME: {"power": 2}}
    args = parser.parse_args([*BASE, "--methods", "magnitude", "--row-weighted-power", "5"])
    assert compare_config(args).options == {}


def test_old_spellings_of_builtin_options_still_work(plugin):
    argv = [*BASE, "--methods", "imp,earlybird", "--rewind", "500it", "--imp-rate", "0.5",
            "--eb-epsilon", "0.05", "--eb-mode", "bn-channel", "--earlybird-max-epochs", "3"]  # fmt: skip
    options = compare_config(build_parser().parse_args(argv)).options
    assert (options["imp"]["rate"], options["imp"]["rewind"]) == (0.5, "500it")
    earlybird = options["earlybird"]
    assert (earlybird["epsilon"], earlybird["mode"], earlybird["max_epochs"]) == (
        0.05, "bn-channel", 3,
    )  # fmt: skip
    assert earlybird["restart"] == "trained"  # not given: the default


def test_a_bad_option_value_is_one_line_and_exit_2(plugin, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*BASE, "--methods", NAME, "--row-weighted-power", "two"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--row-weighted-power: 'two' is not a whole number" in err


def test_the_option_reaches_find_and_runs_csv(plugin, tmp_path, data_root):
    out = tmp_path / "compare"
    argv = [
        *BASE[:-1], str(out), "--methods", NAME, "--row-weighted-power", "3",
        "--train-per-class", "10", "--data-root", str(data_root), "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    assert plugin.seen and all(options == RowWeightedOptions(power=3) for options in plugin.seen)
    table = pd.read_csv(out / "runs.csv")
    rows = table[table["method"] == NAME]
    assert len(rows) == 1 and json.loads(rows["options"].iloc[0]) == {"power": 3}
    # the option decides the mask: power 3 keeps a different set of weights than power 2
    model = pai.build_model("lenet300", "mnist", seed=0)
    assert keep_topk(row_weighted_scores(model, 3), 10) != keep_topk(
        row_weighted_scores(model, 2), 10
    )
