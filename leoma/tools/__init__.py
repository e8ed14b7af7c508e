"""The one-shot tools of operators, the owner and researchers, over every other room.

    replay      re-derive recorded decisions from their events, and compare
    preflight   prove a validator's configuration before it goes live
    rehearse    one full turn and one epoch against the real configuration, no consequences
    corpus      the owner's source corpus in the source bucket
    demo        a short, real tour of the event log
"""
