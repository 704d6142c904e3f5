"""`zoomjax.eval.metrics` on seven hand-made questions; every expected value is worked out by hand below.

    id  type    category  higher_level  gt box               predicted box        correct  plain IoU
    r1  object  Counting  perception    [0, 0, 100, 100]     [0, 0, 100, 100]     yes      1
    r2  object  Color     perception    [0, 0, 100, 100]     [50, 0, 150, 100]    no       5000 / 15000 = 1/3
    r3  region  Counting  reasoning     [0, 0, 200, 100]     none                 yes      0 (needed a crop, got none)
    r4  global  Scene     reasoning     none                 [10, 10, 20, 20]     no       -
    r5  global  Scene     reasoning     none                 none                 yes      -
    r6  region  Color     perception    [100, 100, 300, 300] [100, 100, 300, 200] yes      20000 / 40000 = 1/2
    r7  global  Scene     reasoning     none                 [0, 0, 50, 50]       no       -

APO IoU (plain) = (1 + 1/3 + 0 + 1/2) / 4 = 11/24; a scorer that drops r3 (no box) gets 11/18 instead.
Crops: 5 of 7 questions cropped (r1 r2 r4 r6 r7), 4 have a ground-truth box (r1 r2 r3 r6), 3 are both:
rate 5/7, precision 3/5, recall 3/4.
"""
import pytest

from zoomjax.eval import metrics as M

A = [0, 0, 100, 100]


def records():
  S = M.Scored
  return [
      S("r1", True, 1.0, "object", "Counting", "perception", A, A, stage1_correct=False, turns=2,
        visual_tokens=400),
      S("r2", False, 0.2, "object", "Color", "perception", A, [50, 0, 150, 100]),
      S("r3", True, 1.0, "region", "Counting", "reasoning", [0, 0, 200, 100], None, stage1_correct=True,
        turns=1, visual_tokens=100),
      S("r4", False, 0.0, "global", "Scene", "reasoning", None, [10, 10, 20, 20]),
      S("r5", True, 1.0, "global", "Scene", "reasoning", None, None),
      S("r6", True, 0.9, "region", "Color", "perception", [100, 100, 300, 300], [100, 100, 300, 200]),
      S("r7", False, 0.1, "global", "Scene", "reasoning", None, [0, 0, 50, 50]),
  ]


def test_overall_accuracy_and_apo_iou_scores_a_missing_box_as_zero():
  out = M.compute(records())
  ov = out["overall"]
  assert ov["n"] == 7 and ov["n_correct"] == 4
  assert ov["accuracy"] == pytest.approx(4 / 7, abs=1e-12)
  assert ov["n_with_gt_box"] == 4
  assert ov["apo_iou"] == pytest.approx(11 / 24, abs=1e-12)     # not 11/18 (r3 excluded)


def test_crop_rate_precision_recall():
  crop = M.compute(records())["crop"]
  assert crop["n_cropped"] == 5 and crop["n_gt_box"] == 4
  assert crop["rate"] == pytest.approx(5 / 7, abs=1e-12)
  assert crop["precision"] == pytest.approx(3 / 5, abs=1e-12)
  assert crop["recall"] == pytest.approx(3 / 4, abs=1e-12)


def test_groups_by_type_category_and_higher_level():
  out = M.compute(records())
  t = out["by_type"]
  assert sorted(t) == ["global", "object", "region"]
  assert (t["object"]["n"], t["region"]["n"], t["global"]["n"]) == (2, 2, 3)
  assert t["object"]["accuracy"] == pytest.approx(1 / 2) and t["object"]["apo_iou"] == pytest.approx(2 / 3)
  assert t["region"]["accuracy"] == pytest.approx(1.0) and t["region"]["apo_iou"] == pytest.approx(1 / 4)
  assert t["global"]["accuracy"] == pytest.approx(1 / 3) and t["global"]["apo_iou"] is None
  assert [t[k]["n_with_gt_box"] for k in ("object", "region", "global")] == [2, 2, 0]
  c = out["by_category"]
  assert {k: (g["n"], g["n_correct"]) for k, g in c.items()} == {"Color": (2, 1), "Counting": (2, 2),
                                                                  "Scene": (3, 1)}
  assert c["Color"]["accuracy"] == pytest.approx(1 / 2) and c["Scene"]["accuracy"] == pytest.approx(1 / 3)
  assert "apo_iou" not in c["Color"]
  h = out["by_higher_level"]
  assert {k: g["n"] for k, g in h.items()} == {"perception": 3, "reasoning": 4}
  assert h["perception"]["accuracy"] == pytest.approx(2 / 3) and h["reasoning"]["accuracy"] == pytest.approx(1 / 2)


def test_stage1_turns_and_visual_tokens():
  out = M.compute(records())
  assert out["stage1"]["n"] == 2
  assert out["stage1"]["accuracy"] == pytest.approx(1 / 2)                    # r1 wrong before zooming, r3 right
  assert out["stage1"]["final_accuracy_same_questions"] == pytest.approx(1.0)  # both right at the end
  assert out["mean_turns"] == pytest.approx(1.5) and out["mean_visual_tokens"] == pytest.approx(250.0)


def test_window_apo_uses_the_released_512_windows():
  """Each small box becomes a 512 square from its integer centre - 256, corner clamped at 0 (not shifted):
  r1: both [0, 0, 306, 306] -> 1.  r2: pred [0, 0, 356, 306] vs gt [0, 0, 306, 306] -> 306/356.
  r3: no box -> 0.  r6: pred [0, 0, 456, 406] vs gt [0, 0, 456, 456] -> 406/456."""
  out = M.compute(records(), apo="window")
  want = (1 + 306 / 356 + 0 + 406 / 456) / 4
  assert out["overall"]["apo_iou"] == pytest.approx(want, abs=1e-12)
  assert out["by_type"]["region"]["apo_iou"] == pytest.approx((0 + 406 / 456) / 2, abs=1e-12)
  assert M.compute(records(), apo="plain")["overall"]["apo_iou"] == pytest.approx(11 / 24, abs=1e-12)
  with pytest.raises(ValueError, match="apo"):
    M.compute(records(), apo="windowed")


def test_released_window_rule():
  assert M.released_window([1000, 2000, 1100, 2050]) == [794.0, 1769.0, 1306.0, 2281.0]
  assert M.released_window([10.9, 10.2, 610, 610]) == [10.9, 10.2, 610.0, 610.0]  # both sides >= 512: kept
  assert M.released_window([0, 1000, 600, 1100]) == [44.0, 794.0, 556.0, 1306.0]  # one short side suffices
  assert M.released_window([0, 0, 100, 100]) == [0.0, 0.0, 306.0, 306.0]          # clamped, far corner kept
  assert M.released_window([99.9, 0, 101.9, 2]) == [0.0, 0.0, 356.0, 257.0]       # int-truncated first


def test_box_iou():
  assert M.box_iou(A, A) == 1.0
  assert M.box_iou(A, [50, 0, 150, 100]) == pytest.approx(1 / 3, abs=1e-12)
  assert M.box_iou(A, [25, 25, 75, 75]) == pytest.approx(2500 / 10000, abs=1e-12)   # contained
  assert M.box_iou(A, [100, 0, 200, 100]) == 0.0                                     # touching
  assert M.box_iou([10, 10, 0, 0], [10, 10, 0, 0]) == 0.0                            # inverted: empty
  assert M.question_iou(A, None) == 0.0 and M.question_iou(A, None, "window") == 0.0


def test_empty_and_degenerate_inputs():
  out = M.compute([])
  assert out["overall"] == {"accuracy": None, "n": 0, "n_correct": 0, "apo_iou": None, "n_with_gt_box": 0}
  assert out["crop"]["rate"] is None and out["stage1"]["accuracy"] is None and out["by_type"] == {}
  only_global = M.compute([M.Scored("g", True, 1.0, "global")])
  assert only_global["overall"]["apo_iou"] is None and only_global["crop"]["precision"] is None
  assert only_global["crop"]["recall"] is None and only_global["crop"]["rate"] == 0.0
