-- Streams get an optional name (issue 13): null when unnamed.
ALTER TABLE streams ADD COLUMN name text
    CHECK (name IS NULL OR char_length(name) BETWEEN 1 AND 100);
