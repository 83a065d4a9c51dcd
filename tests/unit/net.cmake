# Unit tests of base/net's pure parts: the connection gate (cap, refusal, eviction of the oldest),
# the accept backoff and loopback addresses; the backpressure pieces (token bucket, flood guard,
# admission queue, reconnect backoff) with injected time and randomness. No sockets, no sleeps.
add_executable(unit_net
  ${CMAKE_CURRENT_LIST_DIR}/net_listener_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net_limits_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net_run_on_test.cpp
)
# qkdn_core for the injected Random of the backoff tests.
target_link_libraries(unit_net PRIVATE qkdn_net qkdn_core GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_net TEST_PREFIX "unit_net." PROPERTIES LABELS unit)

# southbound::FramedServer (the Ck and KMA listeners' accept side) over real TCP on port 0: the
# registration bound answered busy, the registration deadline, the gates, stop and drain.
add_executable(unit_framed_server ${CMAKE_CURRENT_LIST_DIR}/framed_server_test.cpp)
target_link_libraries(unit_framed_server PRIVATE qkdn_southbound_net GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_framed_server TEST_PREFIX "unit_framed_server." PROPERTIES LABELS unit
                                        TIMEOUT 60)
