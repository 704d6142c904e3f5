"""The WordNet answer judge (SPEC §4) and offline WordNet (zoomjax.rl.wordnet)."""
import gzip
import pathlib
import re
import warnings

import pytest

from zoomjax.rl import judge, wordnet
from zoomjax.rewards import answer_score, is_correct


@pytest.mark.parametrize("pred,gt,want", [
    ("automobile", "car", 1.0),          # same synset car.n.01
    ("aircraft", "airplane", 1 / 3),     # airplane -> heavier-than-air craft -> aircraft: 2 edges
    ("cat", "dog", 0.2),                 # dog -> canine -> carnivore <- feline <- cat: 4 edges
    ("cars", "car", 1.0),                # lemmatised
    ("Car.", "car", 1.0),                # normalised: case, trailing dot
    ("  YES ", "yes", 1.0),
    ("three", "3", 1.0),                 # WordNet lists "3" as a lemma of three.n.01
    ("4", "3", 1 / 3),                   # sibling numbers under digit: partial credit, incorrect
    ("", "port", 0.0),
    (None, "port", 0.0),
    ("port", "", 0.0),                   # empty ground truth scores 0 (released)
    ("xqzvw", "port", 0.0),              # not a WordNet word
])
def test_single_words_both_rules(pred, gt, want):
  for rule in ("extended", "released"):
    assert answer_score(pred, gt, rule=rule) == pytest.approx(want, abs=1e-12), rule


@pytest.mark.parametrize("pred,gt,extended,released", [
    ("light gray", "light grey", 1.0, 0.0),      # word by word: gray == grey
    ("Light Grey.", "light grey", 1.0, 1.0),     # identical after normalising
    ("car park", "parking lot", 1.0, 0.0),       # WordNet collocations car_park / parking_lot
    ("container ship", "cargo ship", 0.5, 0.0),  # collocations, hyponym: 1 edge
    ("dark grey", "light grey", 2 / 3, 0.0),     # (dark~light 1/3 + grey 1) / 2
    ("cars", "cars and trucks", 2 / 3, 0.0),     # missing word: recall (1 + 1/3) / 2
    ("3.0", "3", 1.0, 0.0),                      # equal numbers written differently
])
def test_multi_word_and_numbers(pred, gt, extended, released):
  assert answer_score(pred, gt) == pytest.approx(extended)
  assert answer_score(pred, gt, rule="released") == pytest.approx(released)


def test_threshold_and_batch():
  assert is_correct("automobile", "car") and not is_correct("cat", "dog")
  out = judge.answer_scores(["car", "cat"], ["automobile", "dog"])
  assert out.dtype.name == "float32" and out.tolist() == pytest.approx([1.0, 0.2])
  with pytest.raises(ValueError):
    answer_score("a", "b", rule="nope")


def test_cache_hits():
  judge.cache_clear()
  answer_score("harbour", "port")
  before = judge.cache_info()["pairs"].hits
  answer_score("Harbour.", "port")       # same normalised pair
  assert judge.cache_info()["pairs"].hits == before + 1


def test_lexnames_match_man_page():
  assert len(wordnet.LEXNAMES) == 45
  lines = wordnet.lexnames_text().splitlines()
  assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"
  man = pathlib.Path("/usr/share/man/man5/lexnames.5WN.gz")
  if man.exists():
    rows = re.findall(r"^(\d\d)\t(\S+)\s*\t", gzip.open(man, "rt").read(), re.M)
    assert [name for _, name in rows] == list(wordnet.LEXNAMES)


def test_missing_wordnet_is_a_clear_error(tmp_path, monkeypatch):
  import nltk
  empty = tmp_path / "empty"
  empty.mkdir()
  monkeypatch.setattr(nltk.data, "path", [str(empty)])
  monkeypatch.setenv("ZOOMJAX_NLTK_DATA", str(empty))
  monkeypatch.setenv("ZOOMJAX_WORDNET_SRC", str(empty))
  monkeypatch.setenv("ZOOMJAX_WORDNET_DOWNLOAD", "0")
  wordnet.reset_for_tests()
  judge.cache_clear()
  try:
    with pytest.raises(wordnet.WordNetUnavailable, match="apt-get install -y wordnet-base"):
      wordnet.ensure_wordnet()
    with pytest.raises(wordnet.WordNetUnavailable):    # the judge never falls back to a silent 0
      answer_score("kitten", "puppy")
  finally:
    wordnet.reset_for_tests()
    judge.cache_clear()


def test_build_from_debian_needs_no_omw(tmp_path, monkeypatch):
  if not pathlib.Path(wordnet.DEBIAN_DIR, "data.noun").exists():
    pytest.skip("Debian wordnet-base is not installed here")
  import nltk
  from nltk.corpus.reader.wordnet import WordNetCorpusReader
  with pytest.raises(wordnet.WordNetUnavailable, match="missing"):
    wordnet.build_from_debian(tmp_path / "nowhere", tmp_path / "bad")
  root = wordnet.build_from_debian(wordnet.DEBIAN_DIR, tmp_path / "nltk_data")
  assert (root / "corpora" / "wordnet" / "lexnames").read_text() == wordnet.lexnames_text()
  assert wordnet.build_from_debian(wordnet.DEBIAN_DIR, root) == root     # reused, not rebuilt
  # NLTK refuses a corpus root that is not under one of its data paths (SPEC §4)
  monkeypatch.setattr(nltk.data, "path", [str(root)] + list(nltk.data.path))
  # A reader over just this corpus, with no multilingual (omw) reader at all, does everything the
  # judge needs: synsets, path_similarity, and the lemmatiser's _morphy.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")     # "multilingual functions are not available"
    wn = WordNetCorpusReader(str(root / "corpora" / "wordnet"), None)
  dog, cat = wn.synset("dog.n.01"), wn.synset("cat.n.01")
  assert dog.path_similarity(cat) == pytest.approx(0.2)
  assert min(wn._morphy("airplanes", "n"), key=len) == "airplane"
  # and the judge itself runs here without omw-1.4 installed anywhere
  try:
    nltk.data.find("corpora/omw-1.4")
  except LookupError:
    assert answer_score("cats", "dog") == pytest.approx(0.2)
