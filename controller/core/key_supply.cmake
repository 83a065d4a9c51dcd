# Key supply (Q.4164 7.2-7.6): sessions, the reservation ledger and the relay state machine.
list(APPEND QKDN_CORE_SOURCES
  core/sessions.cpp
  core/ledger.cpp
  core/relays.cpp
)
