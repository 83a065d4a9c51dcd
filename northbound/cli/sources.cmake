# qkdnctl: the operator CLI over the northbound REST API. One translation unit on purpose (CI has
# two cores); it depends on Boost (Beast, Asio, JSON), OpenSSL and base/ (the shared argument
# parser, the error type and the strict JSON reader) only, never on the controller.
add_executable(qkdnctl ${CMAKE_CURRENT_LIST_DIR}/qkdnctl.cpp)
target_link_libraries(qkdnctl PRIVATE qkdn_base qkdn_json Boost::headers Boost::json OpenSSL::SSL
                                      OpenSSL::Crypto Threads::Threads qkdn_options)
