"""Model cards: both formats carry every dataset version and hash and every metric, the HTML is self-contained
(no scripts, nothing fetched), the Markdown tables are well formed, JSON round-trips, and bad input is refused."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from mlwork.models.card import NOT_PROVIDED, ModelCard, model_card
from mlwork.core import InvalidParameter
from mlwork.evaluation.explain import explain
from mlwork.evaluation.metrics import compare, evaluate, slice_metrics
from mlwork.data.store import DatasetStore
from mlwork.synthetic import generate
from mlwork.models.train import LGBMTrainer

FEATURES = ['age', 'income', 'debt_ratio', 'loan_amount', 'loan_purpose', 'employment', 'region']


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp('card')
    frame = generate('credit', n_rows=3_000, seed=4).frame
    store = DatasetStore(d / 'store')
    store.ingest('credit', frame.head(2_000))
    store.ingest('credit-eval', frame.tail(1_000))
    est = LGBMTrainer(num_boost_round=60, early_stopping_rounds=10).fit('credit', 'repaid', FEATURES, store=store)
    test = store.read('credit-eval', version=0)
    info = store.info('credit-eval', 0)
    y, p = test['repaid'].to_numpy(), est.predict(test.select(FEATURES))
    scored = test.with_columns(p=pl.Series(p))
    card = model_card(
        est, name='credit | risk',
        metrics={'credit-eval@0': evaluate(y, p), 'bootstrap': {'roc_auc': {'value': 0.7, 'lower': 0.66, 'upper': 0.74, 'n': 1000}}},
        comparisons=[compare(y, p * 0.5 + 0.25 * np.sin(np.arange(len(p))), p, n_boot=200)],
        slices=slice_metrics(scored, 'region', target='repaid', prediction='p'),
        fairness={'F': {'selection_rate': 0.4}, 'M': {'selection_rate': 0.45}},
        explanation=explain(est.model_, test.select(FEATURES).head(300)),
        datasets=[{'role': 'evaluation', 'ref': 'credit-eval@0', 'content_hash': info.content_hash, 'rows': test.height}],
        intended_use='Review queue ordering.\n\nSecond paragraph <b>bold?</b> | pipe', registry={'name': 'credit|prod', 'version': 2,
                                                                           'aliases': ['champion'], 'key_id': 'k-123'})
    return est, card, info


def _hashes(card: ModelCard) -> list[str]:
    return [v for ds in card.datasets for v in (ds.get('content_hash'), ds.get('version_hash')) if v]


def test_every_dataset_version_hash_and_metric_in_both_formats(built):
    est, card, info = built
    lin = est.lineage_.data
    assert lin['ref'] == 'credit@0' and lin['version_hash'] and lin['content_hash']
    assert set(_hashes(card)) == {lin['content_hash'], lin['version_hash'], info.content_hash}
    md, page = card.to_markdown(), card.to_html()
    for text in (md, page):
        for h in _hashes(card):
            assert h in text
        assert 'credit@0' in text and 'credit-eval@0' in text
        for r in card.metrics:
            assert r['metric'] in text and r['set'] in text
        assert str(est.best_iteration_) in text and 'k-123' in text and 'champion' in text
    # every metric value, as shown (4 significant digits), in the markdown table rows
    for r in card.metrics:
        value = f"{r['value']:.4g}"
        assert re.search(rf"\| {re.escape(r['set'])} \| {re.escape(r['metric'])} \| {re.escape(value)} \|", md), r
    assert '[0.66, 0.74]' in md


def test_html_is_self_contained(built):
    page = built[1].to_html()

    class Audit(HTMLParser):
        def __init__(self):
            super().__init__(); self.bad = []
        def handle_starttag(self, tag, attrs):
            if tag in ('script', 'iframe', 'object', 'embed', 'link', 'img'):
                self.bad.append(tag)
            for k, v in attrs:
                if k in ('src', 'href', 'xlink:href') and v and not v.startswith('#'):
                    self.bad.append(f'{tag} {k}={v}')
                if k.startswith('on'):
                    self.bad.append(f'{tag} {k}')
    a = Audit(); a.feed(page)
    assert a.bad == []
    assert not re.search(r'url\((?!#)|@import', page)  # only references to ids inside the page
    # http(s) appears only as XML namespace names and in matplotlib's SVG <metadata> (identifiers, never fetched)
    bare = re.sub(r'<metadata>.*?</metadata>', '', page, flags=re.S)
    bare = re.sub(r'xmlns(:\w+)?="[^"]*"', '', bare)
    assert not re.search(r'https?://', bare)
    assert '<svg' in page and 'Second paragraph &lt;b&gt;bold?&lt;/b&gt;' in page


def test_markdown_tables_are_well_formed(built):
    md = built[1].to_markdown()
    blocks, cur = [], []
    for line in md.splitlines():
        if line.startswith('|'):
            cur.append(line)
        elif cur:
            blocks.append(cur); cur = []
    if cur:
        blocks.append(cur)
    assert len(blocks) >= 8
    for b in blocks:
        cells = [len(re.findall(r'(?<!\\)\|', row)) - 1 for row in b]
        assert len(set(cells)) == 1, b  # same column count in every row, escaped pipes not counted
        assert re.fullmatch(r'\|(---\|)+', b[1]), b[1]
    assert '| name | credit\\|prod |' in md  # a pipe in a cell is escaped


def test_round_trip_and_not_provided(built, tmp_path):
    est, card, _ = built
    back = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert back == card and back.to_markdown() == card.to_markdown()
    paths = card.save(tmp_path / 'out')
    assert ModelCard.from_dict(paths['json'].read_text()) == card
    assert paths['markdown'].read_text() == card.to_markdown() and paths['html'].read_text().startswith('<!DOCTYPE html>')
    bare = model_card(est)
    for text in (bare.to_markdown(), bare.to_html()):
        assert text.count(NOT_PROVIDED) == 11
    for title in ('Intended use', 'Evaluation', 'Fairness', 'Fairness audits', 'Limitations', 'Ethical considerations', 'Registry'):
        assert f'## {title}\n\n_{NOT_PROVIDED}_' in bare.to_markdown()
    with pytest.raises(InvalidParameter, match='format'):
        ModelCard.from_dict({**card.to_dict(), 'format': 'other'})


@pytest.mark.parametrize('kw, match', [
    ({'metrics': [0.8]}, "'metrics' parameter of model_card must be a Performance"),
    ({'metrics': {'test': {'auc': 'good'}}}, 'a number, \\(value, lower, upper\\)'),
    ({'fairness': {'F': 0.4}}, "'fairness' parameter of model_card must be a mapping of group"),
    ({'explanation': 'shap'}, "'explanation' parameter of model_card must be an Explanation"),
    ({'slices': 'region'}, "'slices' parameter of model_card"),
    ({'registry': ['credit', 2]}, "'registry' parameter of model_card must be a mapping"),
    ({'intended_use': 42}, "'intended_use' parameter of model_card must be a string or None"),
    ({'comparisons': 3}, "'comparisons' parameter of model_card"),
])
def test_bad_input_is_named(built, kw, match):
    with pytest.raises(InvalidParameter, match=match):
        model_card(built[0], **kw)
    with pytest.raises(InvalidParameter, match="'model' parameter of model_card must be a TrainedModel"):
        model_card({'task': 'binary'})
