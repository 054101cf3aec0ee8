from search.testing import SearcherContract


class TestBayes(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200}


class TestBayesUCB(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200, "acquisition": "ucb"}
