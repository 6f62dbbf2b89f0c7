-- English text is analysed with its spellings made one (quarry.search, bench/README.md
-- "Retrieval quality"): a Greek letter and its name (TNF-α, TNF-alpha) and a British word and
-- its American form (tumour, tumor; randomised, randomized) index and search as the same term.
-- Scientific text mixes them, and a query written one way missed chunks written the other.
-- Only the `english` analyzer does this; any other configuration analyses the text as it is.

-- The text as the `english` analyzer reads it: lower case, Greek letters spelled out, British
-- spellings American. A rule's fragment must be in the text before its pattern runs (a
-- substring check costs far less than a regular expression, and most texts hold no British
-- spelling). The -ise rule leaves alone words that end in -ise in American English too
-- (exercise, supervise, promise, precise), or that rule would part them from their relatives
-- (supervision). Stored text is never changed: this feeds analysis only.
CREATE OR REPLACE FUNCTION english_spelling(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    letters constant text[] := array[
        'α', 'β', 'γ', 'δ', 'ε', 'ϵ', 'ζ', 'η', 'θ', 'ϑ', 'ι', 'κ', 'ϰ', 'λ', 'μ', 'µ', 'ν',
        'ξ', 'ο', 'π', 'ϖ', 'ρ', 'ϱ', 'σ', 'ς', 'τ', 'υ', 'φ', 'ϕ', 'χ', 'ψ', 'ω',
        'Α', 'Β', 'Γ', 'Δ', 'Ε', 'Ζ', 'Η', 'Θ', 'Ι', 'Κ', 'Λ', 'Μ', 'Ν', 'Ξ', 'Ο', 'Π',
        'Ρ', 'Σ', 'Τ', 'Υ', 'Φ', 'Χ', 'Ψ', 'Ω'];
    -- mu and the micro sign are read as micro, which is what they nearly always mean here
    names constant text[] := array[
        'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'epsilon', 'zeta', 'eta', 'theta',
        'theta', 'iota', 'kappa', 'kappa', 'lambda', 'micro', 'micro', 'nu', 'xi', 'omicron',
        'pi', 'pi', 'rho', 'rho', 'sigma', 'sigma', 'tau', 'upsilon', 'phi', 'phi', 'chi',
        'psi', 'omega',
        'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota',
        'kappa', 'lambda', 'micro', 'nu', 'xi', 'omicron', 'pi', 'rho', 'sigma', 'tau',
        'upsilon', 'phi', 'chi', 'psi', 'omega'];
    -- [fragment, pattern, American form], applied in order
    british constant text[][] := array[
        ['practis', '\mpractis(e|ed|es|ing)\M', 'practic\1'],
        ['haem', 'haem', 'hem'],
        ['aemi', 'aemi(a|c)', 'emi\1'],
        ['paed', 'paed', 'ped'],
        ['gynaec', 'gynaec', 'gynec'],
        ['anaes', 'anaes', 'anes'],
        ['faec', 'faec', 'fec'],
        ['caesar', 'caesar', 'cesar'],
        ['oestr', '\moestr', 'estr'],
        ['ooesoph', 'ooesoph', 'oesoph'],
        ['oesoph', '\moesoph', 'esoph'],
        ['oedem', 'oedem', 'edem'],
        ['foet', '\mfoet', 'fet'],
        ['coeliac', 'coeliac', 'celiac'],
        ['rrhoea', 'rrhoea', 'rrhea'],
        ['pnoea', 'pnoea', 'pnea'],
        ['manoeuvred', 'manoeuvred', 'maneuvered'],
        ['manoeuvre', 'manoeuvre', 'maneuver'],
        ['manoeuvr', 'manoeuvr', 'maneuver'],
        ['aetiol', '\maetiol', 'etiol'],
        ['tumour', 'tumour', 'tumor'],
        ['behaviour', 'behaviour', 'behavior'],
        ['colour', 'colour', 'color'],
        ['favour', 'favour', 'favor'],
        ['labour', 'labour', 'labor'],
        ['neighbour', 'neighbour', 'neighbor'],
        ['odour', 'odour', 'odor'],
        ['humour', 'humour', 'humor'],
        ['vigour', 'vigour', 'vigor'],
        ['rumour', 'rumour', 'rumor'],
        ['harbour', 'harbour', 'harbor'],
        ['flavour', 'flavour', 'flavor'],
        ['endeavour', 'endeavour', 'endeavor'],
        ['vapour', 'vapour', 'vapor'],
        ['savour', 'savour', 'savor'],
        ['armour', 'armour', 'armor'],
        ['honour', 'honour', 'honor'],
        ['rigour', 'rigour', 'rigor'],
        ['clamour', 'clamour', 'clamor'],
        ['fervour', 'fervour', 'fervor'],
        ['ardour', 'ardour', 'ardor'],
        ['candour', 'candour', 'candor'],
        ['parlour', 'parlour', 'parlor'],
        ['lys', '(ana|para|cata|dia|hydro|electro|photo|auto)lys(e|ed|ing)\M', '\1lyz\2'],
        ['centred', 'centred', 'centered'],
        ['centre', 'centre(s?)\M', 'center\1'],
        ['fibre', 'fibre(s?)\M', 'fiber\1'],
        ['litre', 'litre(s?)\M', 'liter\1'],
        ['metre', 'metre(s?)\M', 'meter\1'],
        ['titre', 'titre(s?)\M', 'titer\1'],
        ['theatre', 'theatre(s?)\M', 'theater\1'],
        ['calibre', 'calibre(s?)\M', 'caliber\1'],
        ['lustre', 'lustre(s?)\M', 'luster\1'],
        ['spectre', 'spectre(s?)\M', 'specter\1'],
        ['sombre', 'sombre(s?)\M', 'somber\1'],
        ['meagre', 'meagre(s?)\M', 'meager\1'],
        ['sulph', 'sulph', 'sulf'],
        ['logue', 'logue(s?)\M', 'log\1'],
        ['programme', '\mprogramme(s?)\M', 'program\1'],
        ['ence', '\m(def|off|lic|pret)ence(s?)\M', '\1ense\2'],
        ['grey', '\mgrey', 'gray'],
        ['mould', '\mmould', 'mold'],
        ['aluminium', 'aluminium', 'aluminum']];
    rule text[];
    s text := lower(body);
BEGIN
    IF s ~ '[\u0370-\u03ff\u00b5]' THEN
        FOR i IN 1 .. array_length(letters, 1) LOOP
            s := replace(s, letters[i], names[i]);
        END LOOP;
    END IF;
    FOREACH rule SLICE 1 IN ARRAY british LOOP
        IF strpos(s, rule[1]) > 0 THEN
            s := regexp_replace(s, rule[2], rule[3], 'g');
        END IF;
    END LOOP;
    -- -ise, -ised, -isation... after at least three letters, the last a consonant (not w:
    -- stepwise), unless the word ends as an American -ise word does.
    IF s ~ '[b-df-hj-np-tvxz]is(e|ed|es|ing|ation|ations|er|ers)\M' THEN
        s := regexp_replace(
            s,
            '(?<=[a-z]{2}[b-df-hj-np-tvxz])'
            '(?<!exerc|exc|inc|prec|conc|circumc|pr|prem|dem|chem|rem|prom|v|expert|advert|'
            'merchand|parad|franch|treat|desp|chast|sunr|upr|val|surm|absc)'
            'is(e|ed|es|ing|ation|ations|er|ers)\M',
            'iz\1', 'g');
    END IF;
    RETURN s;
END
$$;

-- What every BM25 analysis goes through, chunks and queries alike: the analyzer's terms of
-- the text, the `english` analyzer's after english_spelling.
CREATE OR REPLACE FUNCTION search_terms(analyzer regconfig, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_tsvector(analyzer, CASE WHEN analyzer = 'pg_catalog.english'::regconfig
                                      THEN english_spelling(body) ELSE body END)
$$;

-- Every chunk of an `english` project is analysed again, as a change of analyzer does
-- (Projects.update): its postings, packed or not, go and are written anew, and the totals
-- follow. Queries are analysed the new way from now on, so postings of the old way would
-- miss them. Every chunk counts towards the next pack.
DELETE FROM term_blocks b USING projects p
WHERE b.project_id = p.id AND p.analyzer = 'pg_catalog.english'::regconfig;
DELETE FROM packed_deletions x USING projects p
WHERE x.project_id = p.id AND p.analyzer = 'pg_catalog.english'::regconfig;
DELETE FROM chunk_terms t USING projects p
WHERE t.project_id = p.id AND p.analyzer = 'pg_catalog.english'::regconfig;

WITH analysed AS (
    SELECT c.id, c.project_id, search_terms(p.analyzer, indexed_text(c.context, c.text)) AS terms
    FROM chunks c
    JOIN projects p ON p.id = c.project_id
    WHERE p.analyzer = 'pg_catalog.english'::regconfig
), counted AS (
    SELECT a.id, a.project_id, a.terms, term_count(a.terms) AS n
    FROM analysed a
), updated AS (
    UPDATE chunks c SET term_count = x.n FROM counted x WHERE c.id = x.id
)
INSERT INTO chunk_terms (project_id, term, chunk_id, tf, chunk_terms)
SELECT x.project_id, t.term, x.id, t.tf, x.n
FROM counted x CROSS JOIN LATERAL postings(x.terms) AS t
WHERE x.n > 0;

UPDATE documents d
SET term_count = coalesce((SELECT sum(c.term_count) FROM chunks c WHERE c.document_id = d.id), 0)
FROM projects p
WHERE d.project_id = p.id AND p.analyzer = 'pg_catalog.english'::regconfig;

UPDATE lexical_stats s
SET term_count = coalesce((SELECT sum(c.term_count) FROM chunks c
                           WHERE c.project_id = s.project_id), 0),
    chunks_since_pack = s.chunk_count
FROM projects p
WHERE s.project_id = p.id AND p.analyzer = 'pg_catalog.english'::regconfig;
