from benchmarks.searchers import variant


def test_table_names_give_the_searcher_and_its_options():
    assert variant("bo-cei") == ("bo", {"feasibility_weight": 1.0})
    assert variant("evolution") == ("evolution", {})
    options = "feasibility_weight=0.5,n_initial=12,acquisition=ucb"
    assert variant(f"bo:{options}") == (
        "bo",
        {"feasibility_weight": 0.5, "n_initial": 12, "acquisition": "ucb"},
    )
