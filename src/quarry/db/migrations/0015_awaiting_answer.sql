-- A conversation answers one message at a time: awaiting_since is set when a question is
-- stored and cleared when its answer is (quarry.answers.chat). A second question meanwhile
-- is refused (409 conversation_busy) rather than answered from the same history and
-- interleaved with the first. A question left without an answer (its process died) stops
-- blocking once it is older than the answer could have taken.
ALTER TABLE conversations ADD COLUMN awaiting_since timestamptz;
