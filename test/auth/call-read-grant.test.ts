import t from 'tap'
import { callReadGrant, type Principal } from '../../src/auth/principal.js'

// How a key came to read a call, which the audit record of the read names.
const key = (role: Principal['role'], agencies: string[] | null, queues: Principal['queues'] = null): Principal => ({ keyId: 'k', name: 'k', role, agencies, queues })
// A Hastings call handed to the sheriff, then to Rosemount: the sheriff's police and Hastings's CRU stay on it.
const call = {
  agency: 'rosemount-pd',
  assignments: [
    { agency: 'hastings-pd', queue: 'cru' },
    { agency: 'dakota-so', queue: 'police' },
    { agency: 'rosemount-pd', queue: 'police' },
  ],
}

t.same(callReadGrant(key('supervisor', ['rosemount-pd']), call), { via: 'agency' }, "the call's agency")
t.same(callReadGrant(key('supervisor', null), call), { via: 'agency' }, 'a county-wide key acts for every agency')
t.same(callReadGrant(key('console', ['rosemount-pd'], ['police']), call), { via: 'agency' }, "a narrowed desk of the call's agency, through that agency's assignment")
t.same(callReadGrant(key('console', ['hastings-pd'], ['cru']), call), { via: 'assignment', agency: 'hastings-pd' }, "Hastings's CRU desk, through the assignment Hastings kept")
t.same(callReadGrant(key('supervisor', ['hastings-pd']), call), { via: 'assignment', agency: 'hastings-pd' })
t.same(callReadGrant(key('supervisor', ['hastings-pd', 'dakota-so']), call), { via: 'assignment', agencies: ['dakota-so', 'hastings-pd'] }, 'every agency of the key that holds an assignment')
t.same(
  callReadGrant(key('console', ['rosemount-pd', 'hastings-pd'], ['cru']), call),
  { via: 'assignment', agency: 'hastings-pd' },
  "a desk that may act for the call's agency but reads it only through another agency's assignment in its queues",
)
t.equal(callReadGrant(key('console', ['hastings-pd'], ['police']), call), null, 'Hastings holds no police assignment on it')
t.equal(callReadGrant(key('console', ['apple-valley-pd']), call), null, 'an agency with nothing on it')
