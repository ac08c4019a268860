"""flexfix.edition.printed: the one reader of ``name=N`` fields in printed reprs kept by recordings."""

from flexfix.edition.printed import printed_int, printed_ints


def test_fields_are_read_by_their_whole_name():
    text = "DecodeCase(num_heads=32, num_kv_heads=8, head_dim=128, dtype=torch.bfloat16, scale=0.5)"
    assert printed_ints(text) == {"num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
    assert printed_int(text, "num_heads") == 32 and printed_int(text, "heads") is None  # not a suffix of a name


def test_a_missing_field_or_text_is_none_not_zero():
    assert printed_int("BatchDescriptor(num_tokens=48, uniform_decode=True)", "num_tokens") == 48
    assert printed_int(None, "num_tokens") is None and printed_ints("") == {}
    assert printed_int("BatchDescriptor(num_tokens=4.5)", "num_tokens") is None  # not a whole number
