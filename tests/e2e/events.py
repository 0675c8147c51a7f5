#!/usr/bin/python3
"""Summarise the test CA's events file (DIR/ca-events.jsonl) for the e2e tests.

    events.py FILE [SINCE]

SINCE is a line count: only the lines after it are read (take `wc -l` of the
file before a case starts). Prints shell assignments, one a line, for eval:

    accounts=N        account-created events
    orders=N          order-created
    mails=N           challenge-mail-sent
    responses=N       response-received for a real challenge (decoys apart)
    max_resp=N        most response-received events for one challenge
    twice=ID,...      challenges answered more than once ('' when none)
    decoy_answers=N   response-received carrying `decoy`, and decoy-answered
    posted=N          challenge-posted
    valid=N invalid=N challenge-valid / challenge-invalid
    issued=N          certificate-issued
    serials='S ...'   serials of the issued certificates, in order
    invalid_detail='' detail of the last challenge-invalid
    faults=N          fault events (the CA's injected faults that fired)
    decoys=N stales=N decoy-mail-sent / stale-mail-sent
    mail_smime='F ...' S/MIME form of each challenge-mail-sent, in order
                      (detached | opaque | - when not S/MIME-signed)
    mail_dkim=N       challenge-mail-sent that were DKIM-signed
"""
import collections
import json
import shlex
import sys


def main():
    path = sys.argv[1]
    since = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    c = collections.Counter()
    per_chall = collections.Counter()
    serials = []
    smime_forms = []
    invalid_detail = ''
    with open(path, encoding='utf-8', errors='replace') as f:
        for i, line in enumerate(f):
            if i < since or not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                c['unparsable'] += 1
                continue
            e = ev.get('event', '')
            c[e] += 1
            if e == 'response-received':
                if ev.get('decoy') or not ev.get('challenge'):
                    c['decoy_answers'] += 1
                else:
                    per_chall[ev['challenge']] += 1
            elif e == 'decoy-answered':
                c['decoy_answers'] += 1
            elif e == 'certificate-issued':
                serials.append(str(ev.get('serial', '')))
            elif e == 'challenge-mail-sent':
                smime_forms.append(str(ev.get('smime') or '-'))
                c['mail_dkim'] += 1 if ev.get('dkim') else 0
            elif e == 'challenge-invalid':
                invalid_detail = str(ev.get('detail', ''))
    out = {
        'accounts': c['account-created'],
        'orders': c['order-created'],
        'mails': c['challenge-mail-sent'],
        'responses': sum(per_chall.values()),
        'max_resp': max(per_chall.values()) if per_chall else 0,
        'twice': ','.join(k for k, v in per_chall.items() if v > 1),
        'decoy_answers': c['decoy_answers'],
        'posted': c['challenge-posted'],
        'valid': c['challenge-valid'],
        'invalid': c['challenge-invalid'],
        'issued': c['certificate-issued'],
        'serials': ' '.join(serials),
        'invalid_detail': invalid_detail,
        'faults': c['fault'],
        'decoys': c['decoy-mail-sent'],
        'stales': c['stale-mail-sent'],
        'mail_smime': ' '.join(smime_forms),
        'mail_dkim': c['mail_dkim'],
        'unparsable': c['unparsable'],
    }
    for k, v in out.items():
        print('%s=%s' % (k, shlex.quote(str(v))))


if __name__ == '__main__':
    main()
