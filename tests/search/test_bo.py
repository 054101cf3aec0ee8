import math

import numpy as np
import pytest

import search
from search import gp
from search.testing import SearcherContract, mixed_space, toy_metrics
from spaces import Choice, Float, Space


class TestBayes(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200}


class TestBayesUCB(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200, "acquisition": "ucb"}
