"""Routes of the reader study (Flask). Every route but ``/static`` and ``/healthz`` needs a token.

Reader (``/r/<token>/``): ``GET /`` the reading page, ``GET api/state`` progress and the next
image's opaque id, ``GET img/<opaque id>`` a bare PNG, ``POST api/answer`` one answer as JSON
``{"image": id, "answer": "real"|"synthetic", "confidence": 1-5, "lesion_type": str,
"response_ms": int}`` (at most ``MAX_BODY`` bytes). Owner (``/o/<token>/``): ``GET /`` the
results page, ``GET results.json``, ``GET fooled.png`` (contact sheet).

A missing or wrong token gets 403 and nothing else; a reader token does not open the owner
pages nor the other way round. Nothing a reader's browser receives names a file or tells real
from synthetic: images are addressed by opaque ids and served from memory, stripped.
"""
from __future__ import annotations

import io
import json

import numpy as np
from flask import Flask, abort, jsonify, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from mammogan_tf.evaluation.vtt import contact_sheet_png, fooled_ranking, score_vtt
from mammogan_tf.evaluation.vtt_web.store import Reader, Store
from mammogan_tf.evaluation.vtt_web.study import Study

MAX_BODY = 4096
"""Largest answer body accepted (bytes); larger gets 413 before anything is parsed."""
MAX_RESPONSE_MS = 24 * 3600 * 1000
HEADERS = {
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
}


def _reader(store: Store, token: str, role: str = "reader") -> Reader:
    reader = store.reader_for(token, role)
    if reader is None:
        abort(403)
    return reader


def _state(study: Study, store: Store, reader: Reader) -> dict:
    done = store.answered(reader.id)
    order = study.order(reader.name)
    remaining = [name for name in order if name not in done]
    return {"total": len(order), "done": len(order) - len(remaining),
            "next": store.opaque[remaining[0]] if remaining else None,
            "settings": study.settings.as_dict()}


def _parse_answer(study: Study, store: Store) -> dict:
    """The validated answer body, or 400/404 naming the field at fault (413 comes from Flask)."""
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        abort(400, "body is not JSON")
    allowed = {"image", "answer", "confidence", "lesion_type", "response_ms"}
    if not isinstance(body, dict) or not set(body) <= allowed:
        abort(400, f"body must be an object with fields {', '.join(sorted(allowed))}")
    if body.get("answer") not in ("real", "synthetic"):
        abort(400, "answer must be 'real' or 'synthetic'")
    image = body.get("image")
    if not isinstance(image, str):
        abort(400, "image must be the id the state gave")
    if image not in store.image_of:
        abort(404, "no such image")
    settings = study.settings
    confidence = body.get("confidence")
    if settings.confidence:
        if type(confidence) is not int or not 1 <= confidence <= 5:
            abort(400, "confidence must be an integer 1-5")
    elif confidence is not None:
        abort(400, "this study does not ask for a confidence")
    lesion_type = body.get("lesion_type")
    if settings.lesion_types and lesion_type not in settings.lesion_types:
        abort(400, f"lesion_type must be one of {', '.join(settings.lesion_types)}")
    if not settings.lesion_types and lesion_type is not None:
        abort(400, "this study does not ask for a lesion type")
    response_ms = body.get("response_ms")
    if response_ms is not None and (type(response_ms) is not int or not 0 <= response_ms <= MAX_RESPONSE_MS):
        abort(400, "response_ms must be a whole number of milliseconds")
    return {"image": store.image_of[image], "answer": body["answer"], "confidence": confidence,
            "lesion_type": lesion_type, "response_ms": response_ms}


def results(study: Study, store: Store) -> dict:
    """Progress of every reader and, for those with answers, ``score_vtt``'s scores."""
    sheets = {reader.name: {} for reader in store.readers()}
    for row in store.answers():
        sheets.setdefault(row["name"], {})[row["image"]] = row["answer"] == "synthetic"
    answered = {name: sheet for name, sheet in sheets.items() if sheet}
    return {"n_images": len(study.key), "progress": {name: len(sheet) for name, sheet in sheets.items()},
            "scores": score_vtt(study.key, answered) if answered else None,
            "fooled": fooled_ranking(study.key, answered)}


def create_app(study: Study, store: Store) -> Flask:
    """The WSGI application for ``study`` backed by ``store``."""
    app = Flask(__name__, static_folder=None, template_folder="templates")
    app.url_map.merge_slashes = False  # "//x" is a 404, not a redirect to "/x"
    app.static_folder = "static"  # only the page's own script and style sheet, never a listing
    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=app.send_static_file)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.after_request
    def _headers(response):
        response.headers.update(HEADERS)
        return response

    @app.errorhandler(HTTPException)
    def _error(error):
        return jsonify(error=error.description if error.code in (400, 404, 409) else error.name), error.code

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.get("/r/")
    @app.get("/o/")
    def no_token():
        abort(403)

    @app.get("/r/<token>/")
    def reader_page(token):
        _reader(store, token)
        return render_template("reader.html")

    @app.get("/r/<token>/api/state")
    def reader_state(token):
        return jsonify(_state(study, store, _reader(store, token)))

    @app.get("/r/<token>/img/<image_id>")
    def reader_image(token, image_id):
        _reader(store, token)
        name = store.image_of.get(image_id)
        if name is None:
            abort(404, "no such image")
        return app.response_class(study.png[name], mimetype="image/png")

    @app.post("/r/<token>/api/answer")
    def reader_answer(token):
        reader = _reader(store, token)
        answer = _parse_answer(study, store)
        status = store.save_answer(reader.id, answer["image"], answer["answer"], answer["confidence"],
                                   answer["lesion_type"], answer["response_ms"], study.settings.final_answers)
        if status == "conflict":
            abort(409, "this image is already answered and answers are final")
        return jsonify({"status": status, **_state(study, store, reader)})

    @app.get("/o/<token>/")
    def owner_page(token):
        _reader(store, token, "owner")
        return render_template("results.html", r=results(study, store), settings=study.settings.as_dict())

    @app.get("/o/<token>/results.json")
    def owner_json(token):
        _reader(store, token, "owner")
        from mammogan_tf.evaluation.report import json_safe

        return jsonify(json_safe(results(study, store)))

    @app.get("/o/<token>/fooled.png")
    def owner_sheet(token):
        _reader(store, token, "owner")
        chosen = results(study, store)["fooled"][:24]
        pixels = [np.array(Image.open(io.BytesIO(study.png[row["image"]]))) for row in chosen]
        captions = [f"{row['image']}: {row['n_fooled']}/{row['n_answered']}" for row in chosen]
        return app.response_class(contact_sheet_png(pixels, captions), mimetype="image/png")

    return app
