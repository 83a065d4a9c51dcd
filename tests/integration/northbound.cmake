# integration_northbound: the northbound API over real HTTP on 127.0.0.1:0 against an in-process
# controller service (insecure Ck, inline topology; KMs register with raw Ck clients).
add_executable(integration_northbound
  ${CMAKE_CURRENT_LIST_DIR}/northbound_api_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/northbound_security_test.cpp
)
target_link_libraries(integration_northbound PRIVATE qkdn_northbound qkdn_service Boost::json
                                                     GTest::gtest_main qkdn_options)
gtest_discover_tests(integration_northbound PROPERTIES LABELS integration TIMEOUT 120)
