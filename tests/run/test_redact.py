"""trainer/redact.py: URL query strings and user info never reach logs or run files."""

from trainer.redact import redact


def test_query_strings_and_user_info_are_redacted_everywhere():
    argv = ["seqtrain", "train", "--set",
            "data.url=https://storage.googleapis.com/b/o.txt?X-Goog-Signature=abc123&X-Goog-Date=1",
            "--model-dir", "gs://bucket/run"]
    out = redact(argv)
    assert out[3] == "data.url=https://storage.googleapis.com/b/o.txt?REDACTED"
    assert out[5] == "gs://bucket/run" and out[:3] == argv[:3]
    nested = redact({"data": {"url": "https://user:pw@host/x?token=t#part"}, "n": 3})
    assert nested == {"data": {"url": "https://REDACTED@host/x?REDACTED#part"}, "n": 3}
    assert "abc123" not in str(redact(("config text: url: https://h/p?sig=abc123\n",)))
